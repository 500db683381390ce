import { describe, expect, it } from 'vitest'
import { buildInput, fieldsOf } from './schemaForm'

const schema = {
  type: 'object',
  required: ['who', 'count'],
  properties: {
    who: { type: 'string', title: 'Who', description: 'Who to greet' },
    count: { type: 'integer', default: 3 },
    ratio: { type: ['number', 'null'] },
    loud: { type: 'boolean', default: true },
    tone: { enum: ['warm', 'dry'] },
    tags: { type: 'array', items: { type: 'string' } },
  },
}

describe('the start form from an input JSON Schema', () => {
  it('makes one field per property with its kind, label and default', () => {
    const fields = fieldsOf(schema)!
    expect(fields.map((f) => [f.name, f.kind, f.required, f.initial])).toEqual([
      ['who', 'string', true, ''],
      ['count', 'integer', true, '3'],
      ['ratio', 'number', false, ''],
      ['loud', 'boolean', false, true],
      ['tone', 'enum', false, ''],
      ['tags', 'json', false, ''],
    ])
    expect(fields[0].label).toBe('Who')
    expect(fields[0].description).toBe('Who to greet')
    expect(fields[4].options).toEqual(['warm', 'dry'])
  })

  it('offers a JSON editor when the schema is not an object with properties', () => {
    expect(fieldsOf(undefined)).toBeNull()
    expect(fieldsOf({ type: 'array' })).toBeNull()
    expect(fieldsOf({ type: 'object' })).toBeNull()
  })

  it('builds typed input and leaves empty optional fields out', () => {
    const fields = fieldsOf(schema)!
    const built = buildInput(fields, { who: 'Ada', count: '5', tags: '["a","b"]', loud: false })
    expect(built.errors).toEqual({})
    expect(built.value).toEqual({ who: 'Ada', count: 5, loud: false, tags: ['a', 'b'] })
  })

  it('says which fields are wrong', () => {
    const fields = fieldsOf(schema)!
    const built = buildInput(fields, { who: ' ', count: '2.5', ratio: 'lots', tags: '[oops' })
    expect(built.errors).toEqual({
      who: 'Who is required',
      count: 'count must be a whole number',
      ratio: 'ratio must be a number',
      tags: 'tags must be JSON',
    })
  })

  it('uses the defaults when the user leaves them', () => {
    const built = buildInput(fieldsOf(schema)!, { who: 'Bo' })
    expect(built.value).toEqual({ who: 'Bo', count: 3, loud: true })
  })
})
