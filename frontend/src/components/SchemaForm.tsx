import type { Field } from '../lib/schemaForm'

export function SchemaForm({
  fields,
  values,
  errors,
  onChange,
}: {
  fields: Field[]
  values: Record<string, string | boolean>
  errors: Record<string, string>
  onChange: (name: string, value: string | boolean) => void
}) {
  return (
    <>
      {fields.map((f) => {
        const id = `input-${f.name}`
        const value = values[f.name] ?? f.initial
        const err = errors[f.name]
        const describedBy = [f.description ? `${id}-help` : '', err ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined
        return (
          <div className="field" key={f.name}>
            {f.kind === 'boolean' ? (
              <label htmlFor={id} className="check">
                <input id={id} type="checkbox" checked={value === true} onChange={(e) => onChange(f.name, e.target.checked)} />
                {f.label}
              </label>
            ) : (
              <label htmlFor={id}>
                {f.label}
                {f.required && <span aria-hidden="true"> *</span>}
              </label>
            )}
            {f.kind === 'enum' && (
              <select
                id={id}
                value={value as string}
                required={f.required}
                aria-invalid={!!err}
                aria-describedby={describedBy}
                onChange={(e) => onChange(f.name, e.target.value)}
              >
                <option value="">{f.required ? 'Choose…' : '(none)'}</option>
                {f.options?.map((o) => (
                  <option key={o} value={o}>
                    {o}
                  </option>
                ))}
              </select>
            )}
            {(f.kind === 'string' || f.kind === 'number' || f.kind === 'integer') && (
              <input
                id={id}
                inputMode={f.kind === 'string' ? undefined : 'decimal'}
                value={value as string}
                required={f.required}
                aria-invalid={!!err}
                aria-describedby={describedBy}
                onChange={(e) => onChange(f.name, e.target.value)}
              />
            )}
            {f.kind === 'json' && (
              <textarea
                id={id}
                rows={4}
                value={value as string}
                required={f.required}
                aria-invalid={!!err}
                aria-describedby={describedBy}
                onChange={(e) => onChange(f.name, e.target.value)}
                spellCheck={false}
              />
            )}
            {f.description && (
              <small id={`${id}-help`} className="muted">
                {f.description}
              </small>
            )}
            {err && (
              <small id={`${id}-error`} className="field-error">
                {err}
              </small>
            )}
          </div>
        )
      })}
    </>
  )
}
