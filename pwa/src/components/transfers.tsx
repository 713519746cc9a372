// Pieces shared by the transfer screens: status labels and tones, who may do what, and the
// `#/transfers?id=…` / `#/transfers?new` sub-routes (app.tsx routes on the part before `?`).
import { computed } from "@preact/signals";
import type {
  TransferAction,
  TransferListFieldsFragment,
  TransferPersonFragment,
  TransferStatus,
} from "../gql/graphql";
import { localDate } from "../lib/dates";
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
export const STATUS_TONE: Record<TransferStatus, string> = {
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

/** Needed by a day already past while the stock has not arrived. */
export function overdue(t: Pick<TransferListFieldsFragment, "neededBy" | "status">): boolean {
  return !!t.neededBy && t.neededBy < localDate() && OPEN_STATUSES.includes(t.status);
}

/** Who took a step, as people read it: full name, else username ("" when not known). */
export function personName(person: TransferPersonFragment | null | undefined): string {
  return person ? person.fullName || person.username : "";
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
