// The witness of a controlled drug's disposal or adjustment: a second person types their own
// username and password on this device. The password goes in that one request and is never
// kept (not in the outbox, not in IndexedDB); the dialog stays open to show a refusal.
import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import "./controlled.css";

export interface Witness {
  username: string;
  password: string;
}

const WITNESS_MESSAGES: Record<string, string> = {
  WITNESS_REQUIRED: "A second person must witness this: enter their username and password.",
  WITNESS_INVALID: "The witness could not be confirmed.",
  WITNESS_SAME_USER: "The witness must be someone other than you.",
  RATE_LIMITED: "Too many wrong passwords: wait a moment, then try again.",
};

/** A refusal as a sentence: the server's message, prefixed by what the code means. */
export function witnessMessage(code: string, message: string): string {
  const lead = WITNESS_MESSAGES[code];
  return lead ? `${lead} ${message.charAt(0).toUpperCase()}${message.slice(1)}.` : message;
}

export function WitnessDialog({
  summary,
  onSubmit,
  onCancel,
}: {
  /** What is being witnessed, e.g. "Dispose of 2 × Oxycodone hydrochloride 10 mg (damaged)". */
  summary: string;
  /** Sends the request with the witness; resolves to an error sentence, or null when done. */
  onSubmit: (witness: Witness) => Promise<string | null>;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const username = useSignal("");
  const password = useSignal("");
  const error = useSignal<string | null>(null);
  const busy = useSignal(false);

  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.open && dialog.close();
  }, []);

  async function submit(event: Event) {
    event.preventDefault();
    if (busy.value) return;
    busy.value = true;
    error.value = null;
    try {
      const refusal = await onSubmit({ username: username.value.trim(), password: password.value });
      if (refusal) {
        error.value = refusal;
        password.value = "";
      }
    } finally {
      busy.value = false;
    }
  }

  return (
    <dialog
      ref={ref}
      class="witness"
      aria-labelledby="witness-title"
      aria-describedby="witness-summary"
      data-testid="witness-dialog"
      onCancel={(e) => {
        e.preventDefault();
        onCancel();
      }}
    >
      <form onSubmit={submit} autoComplete="off">
        <h2 id="witness-title">Witness needed</h2>
        <p id="witness-summary">{summary}</p>
        <p class="meta">
          A controlled drug: a pharmacist or nurse other than you confirms it by entering their own username and
          password on this device.
        </p>
        <label for="witness-username">
          Witness username
          <input
            id="witness-username"
            autoComplete="off"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={username.value}
            onInput={(e) => (username.value = (e.target as HTMLInputElement).value)}
          />
        </label>
        <label for="witness-password">
          Witness password
          <input
            id="witness-password"
            type="password"
            autoComplete="off"
            required
            value={password.value}
            onInput={(e) => (password.value = (e.target as HTMLInputElement).value)}
          />
        </label>
        {error.value && (
          <p class="notice danger" role="alert" data-testid="witness-error">
            {error.value}
          </p>
        )}
        <div class="actions">
          <button type="submit" class="primary big" disabled={busy.value}>
            {busy.value ? "Checking…" : "Confirm as witness"}
          </button>
          <button type="button" class="big" onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
