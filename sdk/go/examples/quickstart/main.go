// Command quickstart logs in to a plantd gateway, sets and gets a state key, and watches a
// change to it: the Go SDK's quick start (docs/sdk-go.md).
//
// Environment: PLANTD_GATEWAY (host:port, default 127.0.0.1:50051), PLANTD_USERNAME (default
// admin), PLANTD_PASSWORD_FILE (a file whose first line is the password, as plantd up's
// admin-credentials; never put a password on a command line), PLANTD_SCOPE (default sdk-demo).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	plantd "plantd.io/sdk/go"
	plantdv1 "plantd.io/sdk/go/plantd/v1"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(err error) {
	st, _ := status.FromError(err)
	fmt.Fprintf(os.Stderr, "error: %s %s", st.Code(), st.Message())
	if reason := plantd.Reason(err); reason != "" {
		fmt.Fprintf(os.Stderr, " (%s)", reason)
	}
	fmt.Fprintln(os.Stderr)
	os.Exit(1)
}

func main() {
	address := env("PLANTD_GATEWAY", "127.0.0.1:50051")
	username := env("PLANTD_USERNAME", "admin")
	scope := env("PLANTD_SCOPE", "sdk-demo")
	passwordFile := os.Getenv("PLANTD_PASSWORD_FILE")
	if passwordFile == "" {
		fmt.Fprintln(os.Stderr, "error: set PLANTD_PASSWORD_FILE to a file holding the password")
		os.Exit(2)
	}
	raw, err := os.ReadFile(passwordFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: cannot read PLANTD_PASSWORD_FILE: %v\n", err)
		os.Exit(2)
	}
	// The first line is the password (plantd up's admin-credentials file has comments after it).
	password, _, _ := strings.Cut(string(raw), "\n")
	password = strings.TrimRight(password, "\r")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := plantd.Dial(address)
	if err != nil {
		fail(err)
	}
	defer client.Close()

	login, err := client.Login(ctx, username, password)
	if err != nil {
		fail(err)
	}
	fmt.Printf("logged in as %s\n", login.GetUser().GetUsername())

	key := "go-quickstart"
	create := true
	set, err := client.State.SetEntry(ctx, &plantdv1.SetEntryRequest{
		Scope: scope, Key: key, Value: "hello from Go", CreateScope: &create,
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("set %s = %s (version %d)\n", key, set.GetEntry().GetValue(), set.GetEntry().GetVersion())
	got, err := client.State.GetEntry(ctx, &plantdv1.GetEntryRequest{Scope: scope, Key: key})
	if err != nil {
		fail(err)
	}
	fmt.Printf("got %s = %s (version %d)\n", key, got.GetEntry().GetValue(), got.GetEntry().GetVersion())

	// Watch from the revision of our write: the stream starts right after it, so the next
	// change it reports is the one made below, whatever the timing.
	start := set.GetRevision()
	watch, err := client.State.WatchEntries(ctx, &plantdv1.WatchEntriesRequest{
		Scope: scope, KeyPrefix: key, StartRevision: &start,
	})
	if err != nil {
		fail(err)
	}
	if _, err := client.State.SetEntry(ctx, &plantdv1.SetEntryRequest{
		Scope: scope, Key: key, Value: "changed by Go",
	}); err != nil {
		fail(err)
	}
	for {
		batch, err := watch.Recv()
		if err != nil {
			fail(err)
		}
		for _, change := range batch.GetChanges() {
			entry := change.GetEntry()
			if entry.GetKey() != key {
				continue // a scope event (created, deleted) carries no entry
			}
			fmt.Printf("watched %s = %s (revision %d)\n", entry.GetKey(), entry.GetValue(), change.GetRevision())
			return
		}
	}
}
