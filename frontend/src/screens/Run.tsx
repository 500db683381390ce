import { useMemo, useState, type FormEvent } from 'react'
import { Link, useNavigate, useParams } from 'react-router'
import { useMutation, useQuery } from '@apollo/client/react'
import { START_EXECUTION, WORKFLOW } from '../api/queries'
import { graphqlProblems } from '../api/problem'
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
  // Kept across retries of the same submission, so a double click or a lost answer starts it
  // once; a changed input is a new submission and gets a new key (the server refuses a key
  // reused with other input).
  const [key, setKey] = useState(newKey)
  const [keyEdited, setKeyEdited] = useState(false)
  const [submitError, setSubmitError] = useState<unknown>(null)
  const [maybeStarted, setMaybeStarted] = useState(false)
  const inputChanged = () => {
    if (!keyEdited) setKey(newKey())
    setMaybeStarted(false)
  }

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
      const firstBad = fields.find((f) => built.errors[f.name])
      if (firstBad) {
        document.getElementById(`input-${firstBad.name}`)?.focus()
        return
      }
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
      const started = res.data!.startExecution
      navigate(`/executions/${encodeURIComponent(started.executionId)}`, {
        state: started.replayed ? { notice: 'An earlier request with this key had already started this execution.' } : undefined,
      })
    } catch (err) {
      // Input problems point into the input (`/who`): shown at their fields.
      const fieldErrors: Record<string, string> = {}
      for (const p of graphqlProblems(err)) {
        const name = p.pointer.split('/')[1]
        if (name && fields?.some((f) => f.name === name)) fieldErrors[name] = p.message
      }
      if (Object.keys(fieldErrors).length > 0) setErrors(fieldErrors)
      // No answer at all: the execution may have started. The same key finds out safely.
      setMaybeStarted(err instanceof Error && !('errors' in err && Array.isArray((err as { errors?: unknown }).errors)))
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
              onChange={(name, v) => {
                setValues((cur) => ({ ...cur, [name]: v }))
                inputChanged()
              }}
            />
          )
        ) : (
          <div className="field">
            <label htmlFor="raw-input">Input (JSON)</label>
            <textarea id="raw-input" rows={8} value={rawJson} onChange={(e) => {
                setRawJson(e.target.value)
                inputChanged()
              }}
              spellCheck={false}
            />
            {errors._json && <small className="field-error">{errors._json}</small>}
          </div>
        )}
        <div className="field">
          <label htmlFor="idempotency-key">Idempotency key</label>
          <div className="inline">
            <input
              id="idempotency-key"
              value={key}
              onChange={(e) => {
                setKey(e.target.value)
                setKeyEdited(true)
              }}
              aria-describedby="key-help"
            />
            <button
              type="button"
              onClick={() => {
                setKey(newKey())
                setKeyEdited(false)
              }}
            >
              New key
            </button>
          </div>
          <small id="key-help" className="muted">
            Submitting again with the same key and input returns the same execution instead of starting another.
          </small>
        </div>
        <ErrorBox error={submitError} title={maybeStarted ? 'No answer' : 'Not started'} />
        {maybeStarted && (
          <p className="notice" role="status">
            It may have started. Submit again without changing anything: the same key answers with the execution if it exists,
            and starts it only if it does not.
          </p>
        )}
        <button type="submit" className="primary" disabled={starting.loading}>
          {starting.loading ? 'Starting…' : 'Start execution'}
        </button>
      </form>
    </section>
  )
}
