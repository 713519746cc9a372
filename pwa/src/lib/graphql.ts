// A small fetch-based GraphQL client: typed documents in, typed data out; bearer token from
// auth.ts, refreshed once and retried when the server says the token is no good.
import { signal } from "@preact/signals";
import type { TypedDocumentString } from "../gql/graphql";
import { AuthError, NetworkError, accessToken, refreshAccessToken } from "./auth";

export { AuthError, NetworkError };

/** False after a request failed to reach the server, true again after one succeeds. */
export const reachable = signal(true);

export interface GraphQLErrorEntry {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string } & Record<string, unknown>;
}

/** The server answered, but with top-level errors (not the typed `errors` of a payload). */
export class GraphQLRequestError extends Error {
  constructor(readonly errors: GraphQLErrorEntry[]) {
    super(errors.map((e) => e.message).join("; ") || "GraphQL request failed");
  }
  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }
}

const UNAUTHENTICATED = "UNAUTHENTICATED";

async function post(query: string, variables: unknown, token: string, signal?: AbortSignal) {
  let response: Response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables }),
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    reachable.value = false;
    throw new NetworkError(`cannot reach the server: ${(error as Error).message}`);
  }
  if (response.status >= 500 && response.status !== 500) {
    throw new NetworkError(`server unavailable (${response.status})`);
  }
  reachable.value = true;
  let body: { data?: unknown; errors?: GraphQLErrorEntry[] };
  try {
    body = await response.json();
  } catch {
    throw new NetworkError(`unreadable response (${response.status})`);
  }
  return { status: response.status, body };
}

function isAuthFailure(status: number, errors?: GraphQLErrorEntry[]): boolean {
  return status === 401 || !!errors?.some((e) => e.extensions?.code === UNAUTHENTICATED);
}

/** True when any typed payload error says the token was refused. */
export function hasUnauthenticated(errors: { code: string }[] | undefined | null): boolean {
  return !!errors?.some((e) => e.code === UNAUTHENTICATED);
}

/** A token request counts for `reachable` too: the access token lives in memory only, so after
 * a reload offline the first thing that fails to reach the server is the refresh. */
async function reaching<T>(pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (error) {
    if (error instanceof NetworkError) reachable.value = false;
    throw error;
  }
}

export async function request<TResult, TVariables>(
  document: TypedDocumentString<TResult, TVariables>,
  variables?: TVariables,
  options: { signal?: AbortSignal } = {},
): Promise<TResult> {
  const query = document.toString();
  let token = await reaching(accessToken());
  let { status, body } = await post(query, variables ?? {}, token, options.signal);
  if (isAuthFailure(status, body.errors)) {
    token = await reaching(refreshAccessToken(token));
    ({ status, body } = await post(query, variables ?? {}, token, options.signal));
    if (isAuthFailure(status, body.errors)) throw new AuthError("the server refused the token");
  }
  if (body.errors?.length) throw new GraphQLRequestError(body.errors);
  if (!body.data) throw new GraphQLRequestError([{ message: `no data (${status})` }]);
  return body.data as TResult;
}

/** Every page of a connection, up to `limit` nodes. */
export async function allPages<TResult, TVariables extends { first: number; after?: string | null }, TNode>(
  document: TypedDocumentString<TResult, TVariables>,
  variables: Omit<TVariables, "first" | "after">,
  pick: (data: TResult) => {
    edges: { node: TNode }[];
    pageInfo: { hasNextPage: boolean; endCursor?: string | null };
  },
  limit = 1000,
): Promise<TNode[]> {
  const nodes: TNode[] = [];
  let after: string | null = null;
  for (;;) {
    const data = await request(document, { ...variables, first: 100, after } as TVariables);
    const connection = pick(data);
    nodes.push(...connection.edges.map((edge) => edge.node));
    if (!connection.pageInfo.hasNextPage || nodes.length >= limit) return nodes;
    after = connection.pageInfo.endCursor ?? null;
  }
}

export function describeError(error: unknown): string {
  if (error instanceof NetworkError) return "Offline: cannot reach the server.";
  if (error instanceof AuthError) return "Your session has ended: please sign in again.";
  if (error instanceof Error) return error.message;
  return String(error);
}
