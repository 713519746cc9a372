// Camera scanning. Loaded with a dynamic import only when the user starts the camera, so the
// decoder (and its wasm) costs nothing until then.
//
// The platform's BarcodeDetector is used where it decodes data_matrix (Android, ChromeOS,
// macOS); elsewhere the `barcode-detector` ponyfill (zxing-wasm) in a worker
// (decoder.worker.ts), so decoding never blocks the UI; on the main thread only if workers
// cannot start. Its .wasm is emitted into dist/assets by Vite and served from our own origin —
// never from a CDN — and precached by the service worker so scanning works offline.
import wasmUrl from "zxing-wasm/reader/zxing_reader.wasm?url";
import type { DecodeReply } from "./decoder.worker";
import { FORMATS } from "./formats";

export interface Detected {
  rawValue: string;
  format: string;
}

interface Detector {
  detect(source: HTMLVideoElement): Promise<{ rawValue: string; format: string }[]>;
  close?(): void;
}

export type Engine = "native" | "zxing-wasm-worker" | "zxing-wasm";

/** The ponyfill in a worker: one frame in flight at a time (the camera loop awaits each). */
function workerDetector(): Detector {
  const worker = new Worker(new URL("./decoder.worker.ts", import.meta.url), { type: "module" });
  let next = 0;
  const waiting = new Map<number, { resolve: (codes: Detected[]) => void; reject: (error: Error) => void }>();
  worker.onmessage = (event: MessageEvent<DecodeReply>) => {
    const reply = event.data;
    const pending = waiting.get(reply.id);
    waiting.delete(reply.id);
    if ("error" in reply) pending?.reject(new Error(reply.error));
    else pending?.resolve(reply.codes);
  };
  worker.onerror = (event) => {
    for (const pending of waiting.values()) pending.reject(new Error(event.message || "decoder worker failed"));
    waiting.clear();
  };
  return {
    async detect(video) {
      const frame = await createImageBitmap(video);
      const id = ++next;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        worker.postMessage({ id, frame }, [frame]);
      });
    },
    close() {
      worker.terminate();
    },
  };
}

async function createDetector(): Promise<{ detector: Detector; engine: Engine }> {
  const Native = (globalThis as { BarcodeDetector?: any }).BarcodeDetector;
  if (Native) {
    try {
      const supported: string[] = await Native.getSupportedFormats();
      if (supported.includes("data_matrix")) {
        const formats = FORMATS.filter((f) => supported.includes(f));
        return { detector: new Native({ formats }), engine: "native" };
      }
    } catch {
      // fall through to the polyfill
    }
  }
  if (typeof Worker !== "undefined" && typeof createImageBitmap !== "undefined") {
    try {
      return { detector: workerDetector(), engine: "zxing-wasm-worker" };
    } catch {
      // fall through to the main thread
    }
  }
  const { BarcodeDetector, prepareZXingModule } = await import("barcode-detector/ponyfill");
  prepareZXingModule({
    overrides: {
      locateFile: (path: string, prefix: string) => (path.endsWith(".wasm") ? new URL(wasmUrl, location.href).href : prefix + path),
    },
    fireImmediately: true,
  });
  return { detector: new BarcodeDetector({ formats: [...FORMATS] }), engine: "zxing-wasm" };
}

export interface CameraOptions {
  video: HTMLVideoElement;
  deviceId?: string;
  onDetected: (result: Detected) => void;
  onError: (message: string) => void;
}

export interface Camera {
  stop(): void;
  torchAvailable: boolean;
  setTorch(on: boolean): Promise<void>;
  deviceId?: string;
  engine: Engine;
}

export async function listCameras(): Promise<MediaDeviceInfo[]> {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === "videoinput");
}

/** Open the camera into `video` and decode frames until stopped. */
export async function startCamera(options: CameraOptions): Promise<Camera> {
  if (!navigator.mediaDevices?.getUserMedia) throw new Error("This browser has no camera access (needs HTTPS).");
  const [{ detector, engine }, stream] = await Promise.all([
    createDetector(),
    navigator.mediaDevices.getUserMedia({
      audio: false,
      video: options.deviceId
        ? { deviceId: { exact: options.deviceId }, width: { ideal: 1280 }, height: { ideal: 720 } }
        : { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
    }),
  ]);
  const video = options.video;
  video.srcObject = stream;
  video.muted = true;
  video.setAttribute("playsinline", "");
  await video.play().catch(() => undefined);
  const track = stream.getVideoTracks()[0];
  const capabilities = (track.getCapabilities?.() ?? {}) as MediaTrackCapabilities & { torch?: boolean };
  let stopped = false;
  let last = "";
  let lastAt = 0;

  const loop = async () => {
    while (!stopped) {
      if (video.readyState >= 2 && video.videoWidth > 0) {
        try {
          const codes = await detector.detect(video);
          const code = codes.find((c) => c.rawValue);
          if (code && !stopped) {
            const now = performance.now();
            // The same pack held in front of the camera is one scan, not ten.
            if (code.rawValue !== last || now - lastAt > 2500) {
              last = code.rawValue;
              lastAt = now;
              options.onDetected({ rawValue: code.rawValue, format: code.format });
            }
          }
        } catch (error) {
          options.onError(`Decoder: ${(error as Error).message}`);
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      await new Promise((r) => setTimeout(r, 120));
    }
  };
  void loop();

  return {
    engine,
    deviceId: track.getSettings().deviceId,
    torchAvailable: !!capabilities.torch,
    async setTorch(on: boolean) {
      await track.applyConstraints({ advanced: [{ torch: on } as MediaTrackConstraintSet] });
    },
    stop() {
      stopped = true;
      detector.close?.();
      stream.getTracks().forEach((t) => t.stop());
      video.srcObject = null;
    },
  };
}
