// `using x = ...` needs Symbol.dispose. Node 20 defines it in its main realm only (as the
// registered Symbol.for('nodejs.dispose')); other realms (vm contexts, jest) lack it. Defining
// the same registered symbol there keeps [Symbol.dispose] methods working in every realm.
if (typeof Symbol.dispose !== 'symbol') {
  Object.defineProperty(Symbol, 'dispose', { value: Symbol.for('nodejs.dispose') });
}
export {};
