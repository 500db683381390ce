/** Moves the caret to the start of `line` (1-based) and focuses the editor. */
export function goToLine(textarea: HTMLTextAreaElement | null, line: number) {
  if (!textarea) return
  const lines = textarea.value.split('\n')
  const offset = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0)
  textarea.focus()
  textarea.setSelectionRange(offset, offset + (lines[line - 1]?.length ?? 0))
}
