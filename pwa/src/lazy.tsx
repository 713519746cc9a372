// Screens beyond the nurse's three (scan, stock, alerts) load on first visit, so the initial
// bundle stays small on a ward tablet's first load. The service worker precaches every chunk,
// so they still open offline.
import type { FunctionComponent } from "preact";
import { useEffect, useState } from "preact/hooks";

export function lazyScreen<M>(load: () => Promise<M>, pick: (module: M) => FunctionComponent): FunctionComponent {
  let loaded: FunctionComponent | null = null;
  let loading: Promise<void> | null = null;
  return function LazyScreen() {
    const [failure, setFailure] = useState<string | null>(null);
    const [, setReady] = useState(0);
    useEffect(() => {
      if (loaded) return;
      let live = true;
      loading ??= load().then((module) => {
        loaded = pick(module);
      });
      loading.then(
        () => live && setReady((n) => n + 1),
        (error: Error) => {
          loading = null; // try again on the next visit
          if (live) setFailure(error.message);
        },
      );
      return () => {
        live = false;
      };
    }, []);
    if (loaded) {
      const Loaded = loaded;
      return <Loaded />;
    }
    if (failure) {
      return (
        <p class="notice danger" role="alert">
          This screen could not be loaded ({failure}). It needs the network once after an update.
        </p>
      );
    }
    return <p aria-live="polite">Loading…</p>;
  };
}
