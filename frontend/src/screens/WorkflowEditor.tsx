import { useEffect, useMemo, useRef, useState } from 'react'
import { Link, useNavigate, useParams } from 'react-router'
import { useMutation, useQuery } from '@apollo/client/react'
import { CREATE_WORKFLOW, UPDATE_WORKFLOW, VALIDATE, WORKFLOW } from '../api/queries'
import { CodeEditor } from '../components/CodeEditor'
import { goToLine } from '../lib/caret'
import { Graph } from '../components/Graph'
import { ErrorBox, Loading, PageTitle } from '../components/ui'
import { parseDefinition, placeProblems, render, STARTER_YAML, type Format, type PlacedProblem } from '../lib/definition'
import { graphqlProblems } from '../api/problem'

interface WorkflowData {
  workflow: { id: string; name: string; latestVersion: number; definition: unknown } | null
}

interface ValidateData {
  validateWorkflow: { valid: boolean; problems: { pointer: string; message: string }[] }
}


export function WorkflowEditor() {
  const { id } = useParams()
  const existing = useQuery<WorkflowData>(WORKFLOW, { variables: { id }, skip: id === undefined, fetchPolicy: 'network-only' })
  if (id === undefined) return <DefinitionForm initialText={STARTER_YAML} />
  const wf = existing.data?.workflow
  if (existing.error) return <ErrorBox error={existing.error} />
  if (existing.loading || !existing.data) return <Loading what="the workflow" />
  if (!wf) return <ErrorBox error={new Error(`There is no workflow ${id}.`)} />
  // Shown without the server-assigned version, as the author wrote it.
  const { version: _version, ...def } = wf.definition as Record<string, unknown>
  void _version
  return <DefinitionForm key={wf.latestVersion} id={id} name={wf.name} expectedVersion={wf.latestVersion} initialText={render(def, 'yaml')} />
}

function DefinitionForm({
  id,
  name,
  expectedVersion,
  initialText,
}: {
  id?: string
  name?: string
  expectedVersion?: number
  initialText: string
}) {
  const editing = id !== undefined
  const navigate = useNavigate()
  const [format, setFormat] = useState<Format>('yaml')
  const [text, setText] = useState(initialText)
  const [serverProblems, setServerProblems] = useState<{ pointer: string; message: string }[]>([])
  const [checkedText, setCheckedText] = useState<string | null>(null)
  const [saveError, setSaveError] = useState<unknown>(null)
  const [checkError, setCheckError] = useState<unknown>(null)
  const textarea = useRef<HTMLTextAreaElement>(null)
  const [validate] = useMutation<ValidateData>(VALIDATE)
  const [create, creating] = useMutation<{ createWorkflow: { id: string } }>(CREATE_WORKFLOW)
  const [update, updating] = useMutation<{ updateWorkflow: { id: string } }>(UPDATE_WORKFLOW)

  const parsed = useMemo(() => parseDefinition(text, format), [text, format])

  // Checks with the server (the same rules as saving) once typing pauses.
  useEffect(() => {
    if (parsed.errors.length > 0 || text.trim() === '') return
    const snapshot = text
    const t = setTimeout(async () => {
      try {
        const res = await validate({ variables: { definition: parsed.value } })
        if (textarea.current && snapshot !== textarea.current.value) return
        setServerProblems(res.data?.validateWorkflow.problems ?? [])
        setCheckError(null)
        setCheckedText(snapshot)
      } catch (e) {
        if (textarea.current && snapshot !== textarea.current.value) return
        const ps = graphqlProblems(e)
        setServerProblems(ps)
        // Not a verdict on the definition (network, server, session): say so, and do not call it valid.
        setCheckError(ps.length > 0 ? null : e)
        setCheckedText(snapshot)
      }
    }, 350)
    return () => clearTimeout(t)
  }, [parsed, text, validate])

  const problems: PlacedProblem[] =
    parsed.errors.length > 0 ? parsed.errors : checkedText === text ? placeProblems(text, serverProblems) : []
  const checked = parsed.errors.length === 0 && checkedText === text
  const valid = checked && serverProblems.length === 0 && checkError === null

  const switchFormat = (next: Format) => {
    if (next === format) return
    if (parsed.errors.length === 0 && parsed.value !== undefined) setText(render(parsed.value, next))
    setFormat(next)
  }

  const save = async () => {
    setSaveError(null)
    try {
      if (editing) {
        await update({ variables: { id, definition: parsed.value, expectedVersion } })
        navigate(`/workflows/${encodeURIComponent(id)}`)
      } else {
        const res = await create({ variables: { definition: parsed.value } })
        navigate(`/workflows/${encodeURIComponent(res.data!.createWorkflow.id)}`)
      }
    } catch (e) {
      const ps = graphqlProblems(e)
      if (ps.length > 0) {
        setServerProblems(ps)
        setCheckedText(text)
      }
      setSaveError(e)
    }
  }

  return (
    <section>
      <PageTitle>{editing ? `Edit ${name ?? id}` : 'New workflow'}</PageTitle>
      {editing && (
        <p className="muted">
          Saving adds version {(expectedVersion ?? 0) + 1}; running executions keep the version they started with.
        </p>
      )}
      <div className="editor-layout">
        <div className="editor-main">
          <div className="toolbar" role="group" aria-label="Format">
            <label>
              <input type="radio" name="format" checked={format === 'yaml'} onChange={() => switchFormat('yaml')} /> YAML
            </label>
            <label>
              <input type="radio" name="format" checked={format === 'json'} onChange={() => switchFormat('json')} /> JSON
            </label>
            <span className="status-line" role="status" aria-live="polite">
              {parsed.errors.length > 0
                ? 'Syntax error'
                : !checked
                  ? 'Checking…'
                  : checkError
                    ? 'Could not check'
                    : valid
                    ? 'Valid'
                    : `${problems.length} problem${problems.length === 1 ? '' : 's'}`}
            </span>
          </div>
          <CodeEditor label="Definition" value={text} onChange={setText} problems={problems} textareaRef={textarea} />
          <div id="definition-problems">
            {problems.length > 0 && (
              <ul className="problems" aria-label="Problems">
                {problems.map((p, i) => (
                  <li key={i}>
                    <button type="button" className="link" onClick={() => goToLine(textarea.current, p.line)}>
                      Line {p.line}
                    </button>
                    {p.pointer && <code>{p.pointer}</code>} {p.message}
                  </li>
                ))}
              </ul>
            )}
          </div>
          {checked && <ErrorBox error={checkError} title="Could not check the definition" />}
          <ErrorBox error={saveError} title="Not saved" />
          <div className="actions">
            <button
              type="button"
              className="primary"
              disabled={!valid || creating.loading || updating.loading}
              onClick={() => void save()}
            >
              {editing ? 'Save new version' : 'Create workflow'}
            </button>
            <Link to={editing ? `/workflows/${encodeURIComponent(id)}` : '/workflows'}>Cancel</Link>
          </div>
        </div>
        <aside className="editor-preview" aria-label="Preview">
          <h2>Graph</h2>
          {parsed.value !== undefined ? <Graph definition={parsed.value} /> : <p className="muted">Fix the syntax to see the graph.</p>}
        </aside>
      </div>
    </section>
  )
}
