/** @type {import('jest').Config} */
module.exports = {
  // the node environment, with BigInt-safe failure details (see the file)
  testEnvironment: '<rootDir>/test/helpers/environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // Type checking is tsc's job (npm run build, before the tests); jest only transpiles.
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] },
  // vCPU runs and property tests on a shared 2-core machine
  testTimeout: 120000,
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
};
