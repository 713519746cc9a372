// Pieces shared by the transfer screens: the status tag, who may do what, field errors, and the
// `#/transfers?id=…` / `#/transfers?new` sub-routes (app.tsx routes on the part before `?`).
import { computed } from "@preact/signals";
import type { TransferAction, TransferListFieldsFragment, TransferStatus } from "../gql/graphql";
import { liveStatus } from "../lib/live";
import { hasRole, href, routeParams } from "../state";

// --- sub-route ---------------------------------------------------------------------------------

/** Which transfer is open (or the request form), from the route's parameters. */
export const transferView = computed(() => ({
  id: routeParams.value.get("id"),
  creating: routeParams.value.has("new"),
}));

export const transferHref = (id: string) => href("transfers", { id });
export const NEW_TRANSFER_HREF = href("transfers", { new: "" });
export const LIST_HREF = href("transfers");

// --- status ------------------------------------------------------------------------------------

export const STATUS_LABEL: Record<TransferStatus, string> = {
  REQUESTED: "Requested",
  APPROVED: "Approved",
  REJECTED: "Rejected",
  PICKED: "Picked",
  DISPATCHED: "Dispatched",
  RECEIVED: "Received",
  CANCELLED: "Cancelled",
};
const STATUS_CLASS: Record<TransferStatus, string> = {
  REQUESTED: "pending",
  APPROVED: "pending",
  PICKED: "pending",
  DISPATCHED: "near",
  RECEIVED: "done",
  REJECTED: "refused",
  CANCELLED: "neutral",
};
export const ACTION_LABEL: Record<TransferAction, string> = {
  REQUEST: "Requested",
  APPROVE: "Approved",
  REJECT: "Rejected",
  PICK: "Picked",
  DISPATCH: "Dispatched",
  RECEIVE: "Received",
  CANCEL: "Cancelled",
};
export const OPEN_STATUSES: TransferStatus[] = ["REQUESTED", "APPROVED", "PICKED", "DISPATCHED"];

export function StatusTag({ status }: { status: TransferStatus }) {
  return (
    <span class={`tag ${STATUS_CLASS[status]}`} data-status={status}>
      {STATUS_LABEL[status]}
    </span>
  );
}

export function today(): string {
  const now = new Date();
  return `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}-${String(now.getDate()).padStart(2, "0")}`;
}

/** Needed by a day already past while the stock has not arrived. */
export function overdue(t: Pick<TransferListFieldsFragment, "neededBy" | "status">): boolean {
  return !!t.neededBy && t.neededBy < today() && OPEN_STATUSES.includes(t.status);
}

// --- who may do what -----------------------------------------------------------------------------

const STOCK_STAFF = ["ADMIN", "PHARMACIST", "WAREHOUSE_MANAGER"] as const;

/**
 * Whether the signed-in user may take `action` now: the state machine (`allowedActions`) and
 * the user's role and scope (the source's managers decide, pick and dispatch; the destination
 * receives; either side may cancel). The server checks again; this only decides what to offer.
 */
export function mayDo(
  action: TransferAction,
  t: Pick<TransferListFieldsFragment, "source" | "destination"> & { allowedActions: TransferAction[] },
): boolean {
  if (!t.allowedActions.includes(action)) return false;
  const atSource = t.source.inMyScope && hasRole(...STOCK_STAFF);
  const atDestination = t.destination.inMyScope && hasRole(...STOCK_STAFF, "NURSE");
  switch (action) {
    case "APPROVE":
    case "REJECT":
    case "PICK":
    case "DISPATCH":
      return atSource;
    case "RECEIVE":
      return atDestination;
    case "CANCEL":
      return atSource || atDestination;
    default:
      return false;
  }
}

// --- typed errors --------------------------------------------------------------------------------

export interface FieldErrors {
  /** Errors by field path (`reason`, `lines.0.quantity`, …). */
  byField: Record<string, string>;
  /** Errors no field on the form shows. */
  general: string[];
}

export const NO_ERRORS: FieldErrors = { byField: {}, general: [] };

/** Sort the server's typed errors into the fields the form has; the rest are general. */
export function sortErrors(
  errors: { code: string; field?: string | null; message: string }[],
  known: (field: string) => boolean,
): FieldErrors {
  const result: FieldErrors = { byField: {}, general: [] };
  for (const e of errors) {
    if (e.field && known(e.field)) result.byField[e.field] = e.message;
    else result.general.push(`${e.message} (${e.code})`);
  }
  return result;
}

/** The error under an input: linked with aria-describedby through `id`. */
export function FieldError({ id, message }: { id: string; message?: string }) {
  if (!message) return null;
  return (
    <span id={id} class="error" role="alert" style={{ display: "block", fontWeight: 600 }}>
      {message}
    </span>
  );
}

export function GeneralErrors({ errors }: { errors: string[] }) {
  if (!errors.length) return null;
  return (
    <div class="notice danger" role="alert" data-testid="form-errors">
      {errors.map((e) => (
        <p key={e} style={{ margin: 0 }}>
          {e}
        </p>
      ))}
    </div>
  );
}

/** Whether transfer changes arrive live (the socket), as text. */
export function LiveBadge() {
  return (
    <span class="pill" data-testid="live-status" aria-label={`Live updates: ${liveStatus.value}`}>
      {liveStatus.value === "connected" ? "● Live" : liveStatus.value === "idle" ? "…" : "○ Reconnecting"}
    </span>
  );
}
