// Scan a pack: the camera through lib/scanner.ts (loaded only when started; torch and camera
// switch where the device has them), or the GTIN / batch typed in. Used by the Scan screen,
// shipment receiving and the count sheet. It only reports the barcode text; the screen decides.
import { useSignal } from "@preact/signals";
import { useEffect, useLayoutEffect, useRef } from "preact/hooks";
import { composeBarcode, gtinValid, toGtin14 } from "../lib/gs1";
import type { Camera } from "../lib/scanner";

export interface PackScannerProps {
  /** Prefix for element ids, so two scanners never share one. */
  id: string;
  /** Called with the raw barcode text (camera) or the composed GS1 string (typed). */
  onCode: (barcode: string, source: "camera" | "manual", format?: string) => void;
  /** While true the camera ignores what it sees (a result is waiting for a decision). */
  paused?: boolean;
  /** Finer than `paused`: whether the camera should report this code now. */
  accept?: (rawValue: string) => boolean;
  /** The camera is being asked for, and when it runs (for the scan timings). */
  onStarting?: () => void;
  onStarted?: (camera: Camera) => void;
  /** The camera button is the screen's main action. */
  primary?: boolean;
  /** Label of the submit button of the typed form. */
  submitLabel?: string;
  /** Whether the typed form starts open. */
  manualOpen?: boolean;
  /** Each new value clears the typed form (after "Scan next": no last batch left to slip in). */
  resetToken?: number;
}

export function PackScanner({
  id,
  onCode,
  paused = false,
  accept,
  onStarting,
  onStarted,
  primary = false,
  submitLabel = "Use this pack",
  manualOpen = true,
  resetToken = 0,
}: PackScannerProps) {
  const camera = useSignal<Camera | null>(null);
  const cameras = useSignal<MediaDeviceInfo[]>([]);
  const torch = useSignal(false);
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  const manual = useSignal({ gtin: "", batch: "", expiry: "", serial: "" });
  const manualError = useSignal<string | null>(null);
  const videoRef = useRef<HTMLVideoElement>(null);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const onCodeRef = useRef(onCode);
  onCodeRef.current = onCode;
  const acceptRef = useRef(accept);
  acceptRef.current = accept;

  useEffect(() => () => camera.value?.stop(), []);
  // A layout effect, not an effect: a plain effect waits for an animation frame, which a
  // backgrounded tab may never paint, and the last pack's batch would still be in the form.
  useLayoutEffect(() => {
    if (!resetToken) return;
    manual.value = { gtin: "", batch: "", expiry: "", serial: "" };
    manualError.value = null;
  }, [resetToken]);

  async function start(deviceId?: string) {
    error.value = null;
    busy.value = true;
    onStarting?.();
    try {
      camera.value?.stop();
      const { startCamera, listCameras } = await import("../lib/scanner");
      camera.value = await startCamera({
        video: videoRef.current!,
        deviceId,
        onDetected: (result) => {
          if (pausedRef.current || acceptRef.current?.(result.rawValue) === false) return;
          if (navigator.vibrate) navigator.vibrate(60);
          onCodeRef.current(result.rawValue, "camera", result.format);
        },
        onError: (message) => {
          error.value = message;
        },
      });
      torch.value = false;
      onStarted?.(camera.value);
      cameras.value = await listCameras().catch(() => []);
    } catch (e) {
      error.value = `Camera unavailable: ${(e as Error).message}. Type the GTIN and batch below.`;
      camera.value = null;
    } finally {
      busy.value = false;
    }
  }

  function stop() {
    camera.value?.stop();
    camera.value = null;
  }

  function switchCamera() {
    const list = cameras.value;
    // While a camera is starting, camera.value still names the previous one: wait for it.
    if (list.length < 2 || busy.value) return;
    const index = list.findIndex((d) => d.deviceId === camera.value?.deviceId);
    void start(list[(index + 1) % list.length].deviceId);
  }

  async function toggleTorch() {
    if (!camera.value) return;
    try {
      await camera.value.setTorch(!torch.value);
      torch.value = !torch.value;
    } catch (e) {
      error.value = `Torch: ${(e as Error).message}`;
    }
  }

  function submit(event: Event) {
    event.preventDefault();
    const { gtin, batch, expiry, serial } = manual.value;
    const digits = gtin.replace(/\s/g, "");
    if (!gtinValid(digits)) {
      manualError.value = "Enter the 8, 12, 13 or 14 digits of the GTIN (check digit included).";
      return;
    }
    manualError.value = null;
    onCode(composeBarcode({ gtin: toGtin14(digits), batch, expiry, serial }), "manual");
  }

  const set = (field: keyof typeof manual.value) => (e: Event) =>
    (manual.value = { ...manual.value, [field]: (e.target as HTMLInputElement).value });

  return (
    <div data-testid={`${id}-scanner`}>
      <div class="camera" hidden={!camera.value && !busy.value}>
        <video ref={videoRef} aria-label="Camera preview" muted playsInline />
        <div class="frame" aria-hidden="true" />
      </div>
      <div class="actions">
        {camera.value ? (
          <button type="button" onClick={stop}>
            Stop camera
          </button>
        ) : (
          <button type="button" class={primary ? "primary big" : "big"} onClick={() => void start()} disabled={busy.value}>
            {busy.value ? "Starting camera…" : "Scan with camera"}
          </button>
        )}
        {camera.value?.torchAvailable && (
          <button type="button" aria-pressed={torch.value} onClick={() => void toggleTorch()}>
            Torch {torch.value ? "off" : "on"}
          </button>
        )}
        {camera.value && cameras.value.length > 1 && (
          <button type="button" onClick={switchCamera} disabled={busy.value}>
            Switch camera
          </button>
        )}
      </div>
      {error.value && (
        <p class="notice danger" role="alert">
          {error.value}
        </p>
      )}
      <details open={manualOpen && !camera.value}>
        <summary>Type GTIN and batch</summary>
        <form onSubmit={submit} class="card panel">
          <label for={`${id}-gtin`}>
            GTIN / EAN
            <input id={`${id}-gtin`} inputMode="numeric" autoComplete="off" required value={manual.value.gtin} onInput={set("gtin")} />
          </label>
          <div class="row">
            <label for={`${id}-batch`}>
              Batch
              <input id={`${id}-batch`} autoComplete="off" value={manual.value.batch} onInput={set("batch")} />
            </label>
            <label for={`${id}-expiry`}>
              Expiry <span class="hint">(optional)</span>
              <input id={`${id}-expiry`} type="date" value={manual.value.expiry} onInput={set("expiry")} />
            </label>
          </div>
          <label for={`${id}-serial`}>
            Serial <span class="hint">(optional)</span>
            <input id={`${id}-serial`} autoComplete="off" value={manual.value.serial} onInput={set("serial")} />
          </label>
          {manualError.value && (
            <p class="error" role="alert">
              {manualError.value}
            </p>
          )}
          <button type="submit" class="primary big">
            {submitLabel}
          </button>
        </form>
      </details>
    </div>
  );
}
