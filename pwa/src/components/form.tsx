// Form and page pieces shared by every screen: the server's typed errors sorted into the fields
// that show them (with the rest as general errors), labelled fields, a "back" link and facts.
import { Fragment, type ComponentChildren, type JSX } from "preact";
import type { MutationErrorFieldsFragment } from "../gql/graphql";
import "./admin.css";

/** A payload's typed errors split into those naming a field the form shows, and the rest. */
export interface FieldErrors {
  /** Errors by field path (`username`, `reason`, `lines.0.quantity`, …). */
  byField: Record<string, string>;
  /** Errors no field on the form shows. */
  general: string[];
}

export const NO_ERRORS: FieldErrors = { byField: {}, general: [] };

/** Errors that belong to no field (a failed request, say). */
export const generalErrors = (...messages: string[]): FieldErrors => ({ byField: {}, general: messages });

/** Sort typed errors into `fields` (a list, or a test for field paths such as `lines.0.quantity`). */
export function splitErrors(
  errors: readonly MutationErrorFieldsFragment[],
  fields: readonly string[] | ((field: string) => boolean),
): FieldErrors {
  const known = typeof fields === "function" ? fields : (field: string) => fields.includes(field);
  const byField: Record<string, string> = {};
  const general: string[] = [];
  for (const error of errors) {
    // The server names input fields as in the schema (camelCase), possibly under "input.".
    const field = error.field?.replace(/^input\./, "") ?? null;
    if (field && known(field)) byField[field] = byField[field] ? `${byField[field]}; ${error.message}` : error.message;
    else general.push(error.message);
  }
  return { byField, general };
}

/**
 * The error under control `id`, tied to it with aria-describedby (see `fieldProps`); its own id is
 * `${id}-error` unless `errorId` says otherwise.
 */
export function FieldError({ id, message, errorId = `${id}-error` }: { id: string; message: string | undefined; errorId?: string }) {
  if (!message) return null;
  return (
    <span id={errorId} class="error" role="alert" data-field-error={id} style={{ display: "block", marginTop: "0.25rem" }}>
      {message}
    </span>
  );
}

/** aria-invalid and aria-describedby for a control whose error may be shown by FieldError. */
export function fieldProps(
  id: string,
  message: string | undefined,
  errorId = `${id}-error`,
): { "aria-invalid"?: "true"; "aria-describedby"?: string } {
  return message ? { "aria-invalid": "true", "aria-describedby": errorId } : {};
}

/** The errors no field shows, in one alert. */
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

type InputProps = Omit<JSX.InputHTMLAttributes<HTMLInputElement>, "onInput" | "value" | "id" | "label">;

export function TextField({
  id,
  label,
  hint,
  value,
  onValue,
  error,
  ...rest
}: {
  id: string;
  label: string;
  hint?: string;
  value: string;
  onValue: (value: string) => void;
  error?: string;
} & InputProps) {
  return (
    <label for={id}>
      {label} {hint && <span class="hint">{hint}</span>}
      <input
        id={id}
        value={value}
        onInput={(e) => onValue((e.target as HTMLInputElement).value)}
        {...fieldProps(id, error)}
        {...rest}
      />
      <FieldError id={id} message={error} />
    </label>
  );
}

/** A group of checkboxes in a fieldset whose legend names it; the error belongs to the group. */
export function CheckboxGroup<T extends string>({
  id,
  legend,
  options,
  selected,
  onChange,
  error,
  hint,
}: {
  id: string;
  legend: string;
  options: { value: T; label: ComponentChildren }[];
  selected: readonly T[];
  onChange: (values: T[]) => void;
  error?: string;
  hint?: string;
}) {
  return (
    <fieldset id={id} class="choices" {...fieldProps(id, error)}>
      <legend>
        {legend} {hint && <span class="hint">{hint}</span>}
      </legend>
      {options.map((o) => (
        <label key={o.value} class="choice">
          <input
            type="checkbox"
            checked={selected.includes(o.value)}
            onChange={(e) => {
              const on = (e.target as HTMLInputElement).checked;
              onChange(on ? [...selected, o.value] : selected.filter((v) => v !== o.value));
            }}
          />
          <span>{o.label}</span>
        </label>
      ))}
      <FieldError id={id} message={error} />
    </fieldset>
  );
}

export function BackLink({ href, children }: { href: string; children: ComponentChildren }) {
  return (
    <p>
      <a class="button link-button back" href={href}>
        ← {children}
      </a>
    </p>
  );
}

/** A `dl` of label/value pairs; values carry data-metric (and data-value when numeric) for tests. */
export function Facts({ items }: { items: { key: string; label: string; value: ComponentChildren; raw?: number | null }[] }) {
  return (
    <dl class="grid2">
      {items.map((item) => (
        <Fragment key={item.key}>
          <dt>{item.label}</dt>
          <dd data-metric={item.key} data-value={item.raw === undefined ? undefined : String(item.raw ?? "")}>
            {item.value}
          </dd>
        </Fragment>
      ))}
    </dl>
  );
}
