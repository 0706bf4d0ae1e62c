// Golden frames shared with the Python tests: both parsers, fed the exact bytes of
// each case split at every byte boundary (inside UTF-8 characters too), must yield
// exactly the case's events.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { GenkitFrameParser, SseParser } from '../src/frames.js';
import { FlowError } from '../src/errors.js';

const golden = JSON.parse(
  readFileSync(new URL('../../tests/fixtures/golden_frames.json', import.meta.url), 'utf8'),
);
const encoder = new TextEncoder();

function startOffset(events) {
  return events.find((event) => 'offset' in event)?.offset ?? 0;
}

/** Feed `pieces` to a fresh parser; all events, and whether bytes were left over. */
function parse(Parser, start, pieces) {
  const parser = new Parser(start);
  const events = [];
  for (const piece of pieces) events.push(...parser.push(piece));
  return { events, pending: parser.pending };
}

const protocols = [
  ['genkit', GenkitFrameParser],
  ['sse', SseParser],
];

describe('golden frames', () => {
  it('has cases for both protocols', () => {
    assert.ok(golden.cases.length >= 5);
    for (const c of golden.cases) {
      assert.equal(typeof c.genkit, 'string', c.name);
      assert.equal(typeof c.sse, 'string', c.name);
    }
  });

  for (const [protocol, Parser] of protocols) {
    describe(protocol, () => {
      for (const c of golden.cases) {
        const bytes = encoder.encode(c[protocol]);
        const start = startOffset(c.events);

        it(`${c.name}: in one piece`, () => {
          assert.deepStrictEqual(parse(Parser, start, [bytes]), { events: c.events, pending: false });
        });

        it(`${c.name}: split at every byte boundary`, () => {
          for (let cut = 0; cut <= bytes.length; cut += 1) {
            const result = parse(Parser, start, [bytes.subarray(0, cut), bytes.subarray(cut)]);
            assert.deepStrictEqual(result, { events: c.events, pending: false }, `cut at byte ${cut}`);
          }
        });

        it(`${c.name}: one byte at a time`, () => {
          const pieces = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
          assert.deepStrictEqual(parse(Parser, start, pieces), { events: c.events, pending: false });
        });

        it(`${c.name}: cut short, reports only whole frames`, () => {
          // What a dropped connection leaves: a prefix. Every event reported must be
          // a prefix of the case's events, and nothing is invented from a partial frame.
          for (let cut = 0; cut < bytes.length; cut += 1) {
            const { events } = parse(Parser, start, [bytes.subarray(0, cut)]);
            assert.deepStrictEqual(events, c.events.slice(0, events.length), `cut at byte ${cut}`);
            assert.ok(events.length < c.events.length, `cut at byte ${cut} reported the terminal`);
          }
        });
      }
    });
  }

  it('sse: skips keep-alive comments anywhere between events', () => {
    const c = golden.cases[0];
    const text = golden.keepAlive + c.sse.replaceAll('\n\n', `\n\n${golden.keepAlive}`);
    const bytes = encoder.encode(text);
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const result = parse(SseParser, 0, [bytes.subarray(0, cut), bytes.subarray(cut)]);
      assert.deepStrictEqual(result.events, c.events, `cut at byte ${cut}`);
    }
  });
});

describe('golden frames of durable flows (resets)', () => {
  it('has cases', () => {
    assert.ok(golden.durableCases.length >= 2);
  });

  for (const c of golden.durableCases) {
    const start = startOffset(c.events);
    const pieces = (text) => {
      const bytes = encoder.encode(text);
      return Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
    };

    it(`${c.name}: sse, with the reset`, () => {
      assert.deepStrictEqual(parse(SseParser, start, pieces(c.sse)), { events: c.events, pending: false });
    });

    it(`${c.name}: genkit frames with offsets, with the reset`, () => {
      const result = parse(GenkitFrameParser, start, pieces(c.genkitOffsets));
      assert.deepStrictEqual(result, { events: c.events, pending: false });
    });

    it(`${c.name}: Genkit's own frames carry no reset`, () => {
      const start = startOffset(c.genkitEvents);
      const result = parse(GenkitFrameParser, start, pieces(c.genkit));
      assert.deepStrictEqual(result, { events: c.genkitEvents, pending: false });
    });
  }
});

describe('parsers beyond the golden cases', () => {
  it('sse: CRLF and CR line endings, split between CR and LF', () => {
    const text = 'id: 0\r\nevent: chunk\r\ndata: "a"\r\n\r\nid: 1\revent: chunk\rdata: "b"\r\revent: result\ndata: 2\n\n';
    const bytes = encoder.encode(text);
    const expected = [{ offset: 0, chunk: 'a' }, { offset: 1, chunk: 'b' }, { result: 2 }];
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const result = parse(SseParser, 0, [bytes.subarray(0, cut), bytes.subarray(cut)]);
      assert.deepStrictEqual(result.events, expected, `cut at byte ${cut}`);
    }
  });

  it('sse: multi-line data, a BOM, and unknown event types', () => {
    const bytes = encoder.encode('\uFEFFevent: other\ndata: 1\n\nid: 3\nevent: chunk\ndata: [1,\ndata: 2]\n\n');
    assert.deepStrictEqual(parse(SseParser, 0, [bytes]).events, [{ offset: 3, chunk: [1, 2] }]);
  });

  it('genkit: counts offsets from the start it is given', () => {
    const parser = new GenkitFrameParser(41);
    const events = parser.push(encoder.encode('data: {"message":"x"}\n\ndata: {"message":"y"}\n\n'));
    assert.deepStrictEqual(events, [{ offset: 41, chunk: 'x' }, { offset: 42, chunk: 'y' }]);
    assert.equal(parser.nextOffset, 43);
  });

  it('genkit: a malformed frame is an INTERNAL FlowError', () => {
    const parser = new GenkitFrameParser();
    assert.throws(() => parser.push(encoder.encode('data: {"nonsense":1}\n\n')), (error) => {
      assert.ok(error instanceof FlowError);
      assert.equal(error.status, 'INTERNAL');
      return true;
    });
    assert.throws(() => new GenkitFrameParser().push(encoder.encode('data: {oops\n\n')), FlowError);
  });
});
