/**
 * Logs in to a plantd gateway, sets and gets a state key, and watches a change to it: the
 * TypeScript SDK's quick start (docs/sdk-typescript.md).
 *
 * Environment: PLANTD_GATEWAY (host:port, default 127.0.0.1:50051), PLANTD_USERNAME (default
 * admin), PLANTD_PASSWORD_FILE (a file whose first line is the password, as plantd up's
 * admin-credentials; never put a password on a command line), PLANTD_SCOPE (default sdk-demo).
 */
import { readFileSync } from "node:fs";

import { Code, ConnectError, PlantdClient, reason } from "../src/index.js";

function env(name: string, fallback: string): string {
  const value = process.env[name];
  return value === undefined || value === "" ? fallback : value;
}

function fail(error: unknown): never {
  const connectError = ConnectError.from(error);
  const code = reason(connectError);
  process.stderr.write(
    `error: ${Code[connectError.code]} ${connectError.rawMessage}${code === "" ? "" : ` (${code})`}\n`,
  );
  process.exit(1);
}

async function main(): Promise<void> {
  const address = env("PLANTD_GATEWAY", "127.0.0.1:50051");
  const username = env("PLANTD_USERNAME", "admin");
  const scope = env("PLANTD_SCOPE", "sdk-demo");
  const passwordFile = process.env["PLANTD_PASSWORD_FILE"] ?? "";
  if (passwordFile === "") {
    process.stderr.write("error: set PLANTD_PASSWORD_FILE to a file holding the password\n");
    process.exit(2);
  }
  let raw: string;
  try {
    raw = readFileSync(passwordFile, "utf8");
  } catch (error) {
    process.stderr.write(`error: cannot read PLANTD_PASSWORD_FILE: ${String(error)}\n`);
    process.exit(2);
  }
  // The first line is the password (plantd up's admin-credentials file has comments after it).
  const password = (raw.split("\n", 1)[0] ?? "").replace(/\r$/, "");

  const client = new PlantdClient(address, { defaultTimeoutMs: 30_000 });
  try {
    const login = await client.login(username, password);
    console.log(`logged in as ${login.user?.username ?? "?"}`);

    const key = "ts-quickstart";
    const set = await client.state.setEntry({ scope, key, value: "hello from TypeScript", createScope: true });
    console.log(`set ${key} = ${set.entry?.value} (version ${set.entry?.version})`);
    const got = await client.state.getEntry({ scope, key });
    console.log(`got ${key} = ${got.entry?.value} (version ${got.entry?.version})`);

    // Watch from the revision of our write: the stream starts right after it, so the next
    // change it reports is the one made below, whatever the timing.
    const watching = new AbortController();
    const watch = client.state.watchEntries(
      { scope, keyPrefix: key, startRevision: set.revision },
      { signal: watching.signal, timeoutMs: 30_000 },
    );
    await client.state.setEntry({ scope, key, value: "changed by TypeScript" });
    for await (const batch of watch) {
      const change = batch.changes.find((c) => c.entry?.key === key); // scope events carry no entry
      if (change !== undefined) {
        console.log(`watched ${key} = ${change.entry?.value} (revision ${change.revision})`);
        watching.abort();
        break;
      }
    }
  } catch (error) {
    fail(error);
  } finally {
    client.close();
  }
}

await main();
