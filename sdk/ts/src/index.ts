/**
 * The TypeScript client of the plantd gateway: the generated plantd.v1 stubs
 * (protoc-gen-es, under ./gen) over one HTTP/2 gRPC connection (Connect's Node transport),
 * with the caller's access token sent as `authorization: Bearer <token>` on every call.
 *
 * Errors are ConnectErrors carrying the gRPC code; their google.rpc.ErrorInfo (domain
 * "plantd.io") holds the plantd error code as its reason: see {@link reason}.
 */
import { ConnectError, createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { BusService } from "./gen/plantd/v1/bus_pb.js";
import { IdentityService, type LoginResponse } from "./gen/plantd/v1/identity_pb.js";
import { StateService } from "./gen/plantd/v1/state_pb.js";

export * from "./gen/plantd/v1/bus_pb.js";
export * from "./gen/plantd/v1/identity_pb.js";
export * from "./gen/plantd/v1/state_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** The ErrorInfo domain of every plantd error. */
export const ERROR_DOMAIN = "plantd.io";

export interface DialOptions {
  /**
   * Use TLS (`https://`). Off by default, as for a gateway on loopback or behind a mesh
   * that carries mTLS; turn it on whenever the network in between is not trusted.
   */
  tls?: boolean;
  /** Deadline of every call that does not set its own, in milliseconds (default: none). */
  defaultTimeoutMs?: number;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
}

/** One connection to a gateway and the clients of the three services on it. */
export class PlantdClient {
  readonly bus: Client<typeof BusService>;
  readonly state: Client<typeof StateService>;
  readonly identity: Client<typeof IdentityService>;
  readonly #session: Http2SessionManager;
  #token = "";

  /** Connects lazily to a gateway at `address` (`host:port`, as the Go SDK's Dial). */
  constructor(address: string, options: DialOptions = {}) {
    const baseUrl = `${options.tls ? "https" : "http"}://${address}`;
    this.#session = new Http2SessionManager(baseUrl);
    // The token may change between calls (login, refresh), so it is read per call.
    const bearer: Interceptor = (next) => async (request) => {
      if (this.#token !== "") {
        request.header.set("authorization", `Bearer ${this.#token}`);
      }
      return next(request);
    };
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.#session,
      interceptors: [bearer, ...(options.interceptors ?? [])],
      ...(options.defaultTimeoutMs === undefined ? {} : { defaultTimeoutMs: options.defaultTimeoutMs }),
    });
    this.bus = createClient(BusService, transport);
    this.state = createClient(StateService, transport);
    this.identity = createClient(IdentityService, transport);
  }

  /**
   * Exchanges a username (or email) and password (and `totp`, the one-time code of a user who
   * turned codes on) for tokens; every later call on this client carries the access token.
   */
  async login(
    identifier: string,
    password: string,
    options?: CallOptions & { totp?: string },
  ): Promise<LoginResponse> {
    const { totp = "", ...callOptions } = options ?? {};
    const response = await this.identity.login({ identifier, password, totp }, callOptions);
    this.setToken(response.accessToken);
    return response;
  }

  /** Makes later calls carry this access token ("" sends none). */
  setToken(token: string): void {
    this.#token = token;
  }

  /** Closes the connection (calls still in flight fail). */
  close(): void {
    this.#session.abort();
  }
}

/**
 * The plantd error code of `error` (ErrorInfo.reason, e.g. "KEY_NOT_FOUND",
 * "PERMISSION_DENIED", "VERSION_CONFLICT"), or "" when it carries none.
 */
export function reason(error: unknown): string {
  const connectError = ConnectError.from(error);
  for (const info of connectError.findDetails(ErrorInfoSchema)) {
    if (info.domain === ERROR_DOMAIN) {
      return info.reason;
    }
  }
  return "";
}

/** Whether `error` is a plantd error with this code. */
export function isReason(error: unknown, code: string): boolean {
  return error !== undefined && error !== null && reason(error) === code;
}
