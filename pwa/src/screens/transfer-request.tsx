// Request a transfer: to one of my locations, from another location, products and quantities,
// needed-by date and a note. Sent directly (it moves no stock); the server's typed field errors
// are shown at their fields.
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  RequestTransferDocument,
  TransferLocationsDocument,
  TransferProductsDocument,
  type ProductSummaryFragment,
} from "../gql/graphql";
import { LIST_HREF, transferHref } from "../components/transfers";
import {
  FieldError,
  GeneralErrors,
  NO_ERRORS,
  fieldProps,
  generalErrors,
  splitErrors,
  type FieldErrors,
} from "../components/form";
import { localDate } from "../lib/dates";
import { describeError, request } from "../lib/graphql";
import { myLocations, navigate, online, selectedLocation } from "../state";
import { Screen, Status, useLoad } from "../ui";

interface Line {
  product: ProductSummaryFragment;
  quantity: number;
}

export function TransferRequest() {
  const mine = myLocations.value;
  const destination = useSignal<string>(
    mine.find((l) => l.id === selectedLocation.value)?.id ?? mine[0]?.id ?? "",
  );
  const chosenSource = useSignal<string | null>(null); // null until the user picks one
  const lines = useSignal<Line[]>([]);
  const neededBy = useSignal("");
  const note = useSignal("");
  const search = useSignal("");
  const results = useSignal<ProductSummaryFragment[]>([]);
  const searching = useSignal(false);
  const searchError = useSignal<string | null>(null);
  const errors = useSignal<FieldErrors>(NO_ERRORS);
  const sending = useSignal(false);

  const locations = useLoad("transfer-locations", async () =>
    (await request(TransferLocationsDocument)).locations.edges.map((e) => e.node).filter((l) => l.active),
  );
  const all = locations.data ?? [];

  // Suggest the destination's parent (a ward's pharmacy) as the source until the user picks one.
  const source =
    chosenSource.value ??
    all.find((l) => l.id === destination.value)?.parent?.id ??
    all.find((l) => l.id !== destination.value)?.id ??
    "";

  useEffect(() => {
    const term = search.value.trim();
    if (term.length < 2) {
      results.value = [];
      return;
    }
    const controller = { cancelled: false };
    const timer = setTimeout(async () => {
      searching.value = true;
      try {
        const data = await request(TransferProductsDocument, { search: term, first: 8 });
        if (controller.cancelled) return;
        results.value = data.products.edges.map((e) => e.node).filter((p) => p.active);
        searchError.value = null;
      } catch (error) {
        if (!controller.cancelled) searchError.value = describeError(error);
      } finally {
        if (!controller.cancelled) searching.value = false;
      }
    }, 250);
    return () => {
      controller.cancelled = true;
      clearTimeout(timer);
    };
  }, [search.value]);

  function add(product: ProductSummaryFragment) {
    clearError("lines");
    if (!lines.value.some((l) => l.product.id === product.id)) lines.value = [...lines.value, { product, quantity: 1 }];
    search.value = "";
    results.value = [];
    setTimeout(() => document.getElementById(`line-qty-${product.id}`)?.focus(), 0);
  }

  /** Editing a field clears the server's error on it (it is checked again on sending). */
  function clearError(field: string) {
    if (!(field in errors.value.byField)) return;
    const { [field]: _gone, ...rest } = errors.value.byField;
    errors.value = { ...errors.value, byField: rest };
  }

  function setQuantity(index: number, quantity: number) {
    clearError(`lines.${index}.quantity`);
    clearError(`lines.${index}.product`);
    lines.value = lines.value.map((l, i) => (i === index ? { ...l, quantity } : l));
  }

  function remove(index: number) {
    // Line errors are by position: after a removal they no longer match.
    const byField = Object.fromEntries(Object.entries(errors.value.byField).filter(([f]) => !f.startsWith("lines.")));
    errors.value = { ...errors.value, byField };
    lines.value = lines.value.filter((_, i) => i !== index);
  }

  const FIELDS = new Set(["source", "destination", "neededBy", "note", "lines"]);
  const known = (field: string) => FIELDS.has(field) || /^lines\.\d+\.(quantity|product)$/.test(field);

  async function submit(event: Event) {
    event.preventDefault();
    if (sending.value) return;
    sending.value = true;
    errors.value = NO_ERRORS;
    try {
      const { requestTransfer } = await request(RequestTransferDocument, {
        source,
        destination: destination.value,
        lines: lines.value.map((l) => ({ product: l.product.id, quantity: l.quantity })),
        neededBy: neededBy.value || null,
        note: note.value.trim() || null,
      });
      if (requestTransfer.errors.length || !requestTransfer.transfer) {
        errors.value = splitErrors(requestTransfer.errors, known);
        const first = Object.keys(errors.value.byField)[0];
        if (first) document.querySelector<HTMLElement>(`[data-field="${first}"]`)?.focus();
        return;
      }
      navigate(transferHref(requestTransfer.transfer.id).slice(2));
    } catch (error) {
      errors.value = generalErrors(describeError(error));
    } finally {
      sending.value = false;
    }
  }

  const err = errors.value.byField;

  return (
    <Screen title="Request a transfer" actions={<a href={LIST_HREF}>All transfers</a>}>
      <form onSubmit={submit} noValidate data-testid="transfer-request">
        {mine.length ? (
          <label for="tr-destination">
            To (my location)
            <select
              id="tr-destination"
              data-field="destination"
              value={destination.value}
              onChange={(e) => {
                clearError("destination");
                destination.value = (e.target as HTMLSelectElement).value;
              }}
              {...fieldProps("tr-destination", err.destination)}
            >
              {mine.map((l) => (
                <option key={l.id} value={l.id}>
                  {l.code} — {l.name}
                </option>
              ))}
            </select>
            <FieldError id="tr-destination" message={err.destination} />
          </label>
        ) : (
          <p class="notice danger">You have no location to request stock for.</p>
        )}
        <Status loaded={locations} />
        <label for="tr-source">
          From
          <select
            id="tr-source"
            data-field="source"
            value={source}
            onChange={(e) => {
              clearError("source");
              chosenSource.value = (e.target as HTMLSelectElement).value;
            }}
            {...fieldProps("tr-source", err.source)}
          >
            {all
              .filter((l) => l.id !== destination.value)
              .map((l) => (
                <option key={l.id} value={l.id}>
                  {l.code} — {l.name}
                </option>
              ))}
          </select>
          <FieldError id="tr-source" message={err.source} />
        </label>

        <fieldset class="card" data-field="lines" tabIndex={-1} style={{ margin: "0 0 0.75rem" }}>
          <legend style={{ fontWeight: 700, padding: "0 0.25rem" }}>Products</legend>
          {lines.value.length === 0 && <p class="meta">No products yet: search and add them below.</p>}
          <ul class="list" data-testid="request-lines">
            {lines.value.map((l, i) => (
              <li key={l.product.id} data-product={l.product.name}>
                <label for={`line-qty-${l.product.id}`}>
                  {l.product.name} {l.product.strength} <span class="hint">{l.product.dosageForm} · packs</span>
                  <input
                    id={`line-qty-${l.product.id}`}
                    data-field={`lines.${i}.quantity`}
                    type="number"
                    inputMode="numeric"
                    min={1}
                    value={l.quantity}
                    onInput={(e) => setQuantity(i, Number((e.target as HTMLInputElement).value))}
                    {...fieldProps(`line-qty-${l.product.id}`, err[`lines.${i}.quantity`], `line-qty-error-${i}`)}
                  />
                </label>
                <FieldError
                  id={`line-qty-${l.product.id}`}
                  errorId={`line-qty-error-${i}`}
                  message={err[`lines.${i}.quantity`] ?? err[`lines.${i}.product`]}
                />
                <button type="button" onClick={() => remove(i)} aria-label={`Remove ${l.product.name} ${l.product.strength}`}>
                  Remove
                </button>
              </li>
            ))}
          </ul>
          <FieldError id="tr-lines" message={err.lines} />
          <label for="tr-product-search">
            Add a product <span class="hint">name, GTIN or ATC code</span>
            <input
              id="tr-product-search"
              type="search"
              autoComplete="off"
              value={search.value}
              onInput={(e) => (search.value = (e.target as HTMLInputElement).value)}
            />
          </label>
          {searching.value && <p aria-live="polite">Searching…</p>}
          {searchError.value && <p class="error">{searchError.value}</p>}
          {results.value.length > 0 && (
            <ul class="list" aria-label="Matching products" data-testid="product-results">
              {results.value.map((p) => (
                <li key={p.id}>
                  <button type="button" style={{ width: "100%", textAlign: "left" }} onClick={() => add(p)}>
                    Add {p.name} {p.strength} <span class="meta">· {p.dosageForm}</span>
                  </button>
                </li>
              ))}
            </ul>
          )}
          {search.value.trim().length >= 2 && !searching.value && !results.value.length && !searchError.value && (
            <p class="meta">No product matches.</p>
          )}
        </fieldset>

        <label for="tr-needed-by">
          Needed by <span class="hint">(optional)</span>
          <input
            id="tr-needed-by"
            data-field="neededBy"
            type="date"
            min={localDate()}
            value={neededBy.value}
            onInput={(e) => {
              clearError("neededBy");
              neededBy.value = (e.target as HTMLInputElement).value;
            }}
            {...fieldProps("tr-needed-by", err.neededBy)}
          />
          <FieldError id="tr-needed-by" message={err.neededBy} />
        </label>
        <label for="tr-note">
          Note <span class="hint">(optional)</span>
          <textarea
            id="tr-note"
            data-field="note"
            rows={2}
            maxLength={500}
            value={note.value}
            onInput={(e) => {
              clearError("note");
              note.value = (e.target as HTMLTextAreaElement).value;
            }}
            {...fieldProps("tr-note", err.note)}
          />
          <FieldError id="tr-note" message={err.note} />
        </label>
        <GeneralErrors errors={errors.value.general} />
        {!online.value && (
          <p class="notice pending" id="tr-offline">
            Offline: a request needs a connection. It is not kept on this device.
          </p>
        )}
        <button
          type="submit"
          class="primary big"
          disabled={sending.value || !online.value || !mine.length}
          aria-describedby={!online.value ? "tr-offline" : undefined}
        >
          {sending.value ? "Sending…" : "Send request"}
        </button>
      </form>
    </Screen>
  );
}
