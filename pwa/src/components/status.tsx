// Status as text for the screens that load on demand: a status tag (each screen keeps its own
// labels and tones) and whether live updates are arriving.
import { liveStatus } from "../lib/live";

/** A status written out in a tag; `tone` is its colour class, `status` the raw value (data-status). */
export function StatusTag({ status, label, tone }: { status: string; label: string; tone: string }) {
  return (
    <span class={`tag ${tone}`} data-status={status}>
      {label}
    </span>
  );
}

/** Whether changes arrive live (the socket), as text. */
export function LiveBadge() {
  return (
    <span class="pill" data-testid="live-status" aria-label={`Live updates: ${liveStatus.value}`}>
      {liveStatus.value === "connected" ? "● Live" : liveStatus.value === "idle" ? "…" : "○ Reconnecting"}
    </span>
  );
}
