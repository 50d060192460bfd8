/** The routing policy: compile the `rules` / `ruleSets` / `final` config, match flows. */
export { compilePolicy, MAX_REGEX_LENGTH, MAX_RULE_DEPTH } from './compile.js';
export type { CompileOptions } from './compile.js';
export { Policy, PolicySlot } from './policy.js';
export type { PolicyStats } from './policy.js';
export { PolicyError, PolicyErrorCode } from './errors.js';
export { CidrTrie, CidrTriePair, parseCidr, tryParseCidr, parseIp, parseIpv4, parseIpv6, formatIp, NO_VALUE } from './cidr-trie.js';
export type { Cidr, CidrParse } from './cidr-trie.js';
export { DomainTrie, DomainKind, KeywordMatcher, RegexList, DomainMatcher, normalizeDomain, normalizeDomainPattern, normalizeKeyword } from './domain-trie.js';
export { PortSet, PortIndex, parsePortItem } from './port-set.js';
export type { MatchContext, MatchResult, Explanation, PolicyInput, RuleInput, RuleSetInput, Network, Inbound, SniffedProtocol } from './types.js';
export { PolicyExplainer, explainWithCheck, formatExplanation } from './explain.js';
export type { PolicyExplanation, RuleFailure, ExplainInput, NameOrigin } from './explain.js';
