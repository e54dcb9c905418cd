// jest's node environment, with failures that can cross the worker boundary. jest-worker
// sends each test's result to the parent as JSON, and a failed expect() on BigInts (every
// register is one) carries them in error.matcherResult: JSON.stringify throws, and the whole
// suite is reported as "Test suite failed to run: Do not know how to serialize a BigInt",
// hiding the diff (jestjs/jest#11617). The message already shows the values; here the
// BigInts left in the error's own fields become strings ('123n') before jest sends it.
const { TestEnvironment } = require('jest-environment-node');

function replaceBigInts(value, seen) {
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object' || seen.has(value)) return value;
  seen.add(value);
  for (const key of Object.keys(value)) {
    const v = value[key];
    const r = replaceBigInts(v, seen);
    if (r !== v) {
      try {
        value[key] = r;
      } catch {
        // a frozen or read-only field: leave it
      }
    }
  }
  return value;
}

class BigIntSafeEnvironment extends TestEnvironment {
  handleTestEvent(event) {
    if (event.name !== 'test_done') return;
    const seen = new Set();
    for (const e of event.test.errors) replaceBigInts(e, seen); // an error, or [error, asyncError]
  }
}

module.exports = BigIntSafeEnvironment;
