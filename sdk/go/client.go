// Package plantd is the Go client of the plantd gateway: the generated plantd.v1 stubs
// (package plantd.io/sdk/go/plantd/v1) over one gRPC connection, with the caller's access
// token sent as "authorization: Bearer <token>" on every call.
//
// Errors are gRPC statuses; their google.rpc.ErrorInfo (domain "plantd.io") carries the
// plantd error code as its reason: see Reason.
package plantd

import (
	"context"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	plantdv1 "plantd.io/sdk/go/plantd/v1"
)

// ErrorDomain is the ErrorInfo domain of every plantd error.
const ErrorDomain = "plantd.io"

// Client holds one connection and the clients of the three services on it.
type Client struct {
	conn     *grpc.ClientConn
	token    *bearer
	Bus      plantdv1.BusServiceClient
	State    plantdv1.StateServiceClient
	Identity plantdv1.IdentityServiceClient
}

// Dial connects to a gateway at address (host:port). Without options the connection is
// plaintext, as for a gateway on loopback or behind a mesh that carries mTLS; pass
// grpc.WithTransportCredentials(credentials.NewTLS(...)) to use TLS.
func Dial(address string, opts ...grpc.DialOption) (*Client, error) {
	token := &bearer{}
	all := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(token),
	}
	conn, err := grpc.NewClient(address, append(all, opts...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:     conn,
		token:    token,
		Bus:      plantdv1.NewBusServiceClient(conn),
		State:    plantdv1.NewStateServiceClient(conn),
		Identity: plantdv1.NewIdentityServiceClient(conn),
	}, nil
}

// Login exchanges a username (or email) and password for tokens; every later call on this
// client carries the access token.
func (c *Client) Login(ctx context.Context, identifier, password string) (*plantdv1.LoginResponse, error) {
	return c.LoginWithCode(ctx, identifier, password, "")
}

// LoginWithCode is Login for a user who turned one-time codes on: totp is the current code.
func (c *Client) LoginWithCode(ctx context.Context, identifier, password, totp string) (*plantdv1.LoginResponse, error) {
	resp, err := c.Identity.Login(ctx, &plantdv1.LoginRequest{Identifier: identifier, Password: password, Totp: totp})
	if err != nil {
		return nil, err
	}
	c.SetToken(resp.GetAccessToken())
	return resp, nil
}

// SetToken makes later calls carry this access token ("" sends none).
func (c *Client) SetToken(token string) { c.token.set(token) }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Reason is the plantd error code of err (ErrorInfo.reason, e.g. "KEY_NOT_FOUND",
// "PERMISSION_DENIED", "VERSION_CONFLICT"), or "" when err carries none.
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// IsReason reports whether err is a plantd error with this code.
func IsReason(err error, reason string) bool {
	return err != nil && Reason(err) == reason
}

// bearer adds the current token to each call; it may change between calls (Login, refresh).
type bearer struct {
	mu    sync.RWMutex
	token string
}

func (b *bearer) set(token string) {
	b.mu.Lock()
	b.token = token
	b.mu.Unlock()
}

func (b *bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.token == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false: a plaintext gateway on loopback, or behind a mesh with
// mTLS, is a supported deployment. Use TLS whenever the network between is not trusted.
func (b *bearer) RequireTransportSecurity() bool { return false }
