/** sluice configuration: types, defaults, schema, loading and rule sets. */
export * from './types.js';
export { ConfigError, formatProblem, isConfigError, type ConfigProblem } from './errors.js';
export { loadConfig, parseConfig, MAX_CONFIG_BYTES } from './load.js';
export { loadRuleSetFile, checkRuleSetEntry, parseRuleSetText, MAX_RULESET_BYTES } from './ruleset.js';
export { configSchema } from './schema.js';
