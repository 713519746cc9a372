// The zxing-wasm decoder in a worker: the camera loop posts frames (ImageBitmap, transferred,
// not copied) and the main thread stays free for the UI while a frame is decoded.
import { BarcodeDetector, prepareZXingModule } from "barcode-detector/ponyfill";
import wasmUrl from "zxing-wasm/reader/zxing_reader.wasm?url";
import { FORMATS } from "./formats";

prepareZXingModule({
  overrides: {
    locateFile: (path: string, prefix: string) => (path.endsWith(".wasm") ? new URL(wasmUrl, self.location.href).href : prefix + path),
  },
  fireImmediately: true,
});
const detector = new BarcodeDetector({ formats: [...FORMATS] });

export interface DecodeRequest {
  id: number;
  frame: ImageBitmap;
}
export type DecodeReply = { id: number; codes: { rawValue: string; format: string }[] } | { id: number; error: string };

self.onmessage = async (event: MessageEvent<DecodeRequest>) => {
  const { id, frame } = event.data;
  try {
    const codes = await detector.detect(frame);
    self.postMessage({ id, codes: codes.map(({ rawValue, format }) => ({ rawValue, format })) } satisfies DecodeReply);
  } catch (error) {
    self.postMessage({ id, error: (error as Error).message } satisfies DecodeReply);
  } finally {
    frame.close();
  }
};
