// A parameter of the hash route (#/shipments?id=...). state.ts's `route` holds only the path,
// so a screen that opens one item reads the query part here, and follows its changes.
import { useEffect, useState } from "preact/hooks";

function read(name: string): string | null {
  const query = location.hash.split("?")[1] ?? "";
  return new URLSearchParams(query).get(name);
}

export function useHashParam(name: string): string | null {
  const [value, setValue] = useState(() => read(name));
  useEffect(() => {
    const update = () => setValue(read(name));
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, [name]);
  return value;
}

export function itemHref(screen: string, id: string): string {
  return `#/${screen}?id=${encodeURIComponent(id)}`;
}
