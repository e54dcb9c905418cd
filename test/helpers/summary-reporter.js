// Ends a jest run with one plain line, "tests: N passed, N failed, N skipped", that CI
// systems read without knowing jest's own summary format. A suite that failed to run (a
// syntax error, a throw at load, a result that could not be sent) has no tests of its own:
// it counts as one failure, so a red run never says "0 failed".
class SummaryReporter {
  onRunComplete(_contexts, results) {
    process.stdout.write(`${summaryLine(results)}\n`);
  }
}

/** The line for an AggregatedResult. */
function summaryLine(results) {
  const { numPassedTests: passed, numFailedTests, numPendingTests: skipped, numTodoTests: todo } = results;
  const brokenSuites = results.numRuntimeErrorTestSuites ?? 0;
  let failed = numFailedTests + brokenSuites;
  // A suite can also fail with all its tests passed (an error after them), and a run can
  // fail outside any suite (runExecError). (results.success is set only after reporters ran.)
  if (failed === 0 && (results.numFailedTestSuites > 0 || results.runExecError)) failed = Math.max(1, results.numFailedTestSuites);
  const note = brokenSuites > 0 ? ` (${brokenSuites} suite${brokenSuites === 1 ? '' : 's'} failed to run)` : '';
  return `tests: ${passed} passed, ${failed} failed${note}, ${skipped + todo} skipped`;
}

module.exports = SummaryReporter;
module.exports.summaryLine = summaryLine;
