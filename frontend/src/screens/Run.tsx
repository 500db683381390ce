import { useMemo, useState, type FormEvent } from 'react'
import { Link, useNavigate, useParams } from 'react-router'
import { useMutation, useQuery } from '@apollo/client/react'
import { START_EXECUTION, WORKFLOW } from '../api/queries'
import { SchemaForm } from '../components/SchemaForm'
import { Empty, ErrorBox, Loading, PageTitle } from '../components/ui'
import { buildInput, fieldsOf } from '../lib/schemaForm'

interface Data {
  workflow: { id: string; name: string; latestVersion: number; status: string; definition: { input_schema?: unknown } } | null
}

function newKey(): string {
  return crypto.randomUUID()
}

export function Run() {
  const { id = '' } = useParams()
  const navigate = useNavigate()
  const { data, loading, error } = useQuery<Data>(WORKFLOW, { variables: { id } })
  const [start, starting] = useMutation<{ startExecution: { executionId: string; replayed: boolean } }>(START_EXECUTION)
  const schema = data?.workflow?.definition.input_schema
  const fields = useMemo(() => fieldsOf(schema), [schema])
  const [values, setValues] = useState<Record<string, string | boolean>>({})
  const [rawJson, setRawJson] = useState('{}')
  const [errors, setErrors] = useState<Record<string, string>>({})
  // Kept across retries of the same submission, so a double click or a lost answer starts it once.
  const [key, setKey] = useState(newKey)
  const [submitError, setSubmitError] = useState<unknown>(null)

  if (loading && !data) return <Loading what="the workflow" />
  if (error) return <ErrorBox error={error} />
  const w = data?.workflow
  if (!w) return <Empty>There is no workflow {id}.</Empty>

  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setSubmitError(null)
    let input: unknown
    if (fields) {
      const built = buildInput(fields, values)
      setErrors(built.errors)
      if (Object.keys(built.errors).length > 0) return
      input = built.value
    } else {
      try {
        input = JSON.parse(rawJson)
        setErrors({})
      } catch {
        setErrors({ _json: 'The input must be JSON' })
        return
      }
    }
    try {
      const res = await start({ variables: { workflowId: w.id, input, idempotencyKey: key } })
      navigate(`/executions/${encodeURIComponent(res.data!.startExecution.executionId)}`)
    } catch (err) {
      setSubmitError(err)
    }
  }

  return (
    <section>
      <PageTitle>Run {w.name}</PageTitle>
      <p className="muted">
        Starts version {w.latestVersion}. <Link to={`/workflows/${encodeURIComponent(w.id)}`}>Back to the workflow</Link>
      </p>
      <form className="form" onSubmit={submit} noValidate>
        {fields ? (
          fields.length === 0 ? (
            <p className="muted">This workflow takes no input.</p>
          ) : (
            <SchemaForm
              fields={fields}
              values={values}
              errors={errors}
              onChange={(name, v) => setValues((cur) => ({ ...cur, [name]: v }))}
            />
          )
        ) : (
          <div className="field">
            <label htmlFor="raw-input">Input (JSON)</label>
            <textarea id="raw-input" rows={8} value={rawJson} onChange={(e) => setRawJson(e.target.value)} spellCheck={false} />
            {errors._json && <small className="field-error">{errors._json}</small>}
          </div>
        )}
        <div className="field">
          <label htmlFor="idempotency-key">Idempotency key</label>
          <div className="inline">
            <input id="idempotency-key" value={key} onChange={(e) => setKey(e.target.value)} aria-describedby="key-help" />
            <button type="button" onClick={() => setKey(newKey())}>
              New key
            </button>
          </div>
          <small id="key-help" className="muted">
            Submitting again with the same key and input returns the same execution instead of starting another.
          </small>
        </div>
        <ErrorBox error={submitError} title="Not started" />
        <button type="submit" className="primary" disabled={starting.loading}>
          {starting.loading ? 'Starting…' : 'Start execution'}
        </button>
      </form>
    </section>
  )
}
