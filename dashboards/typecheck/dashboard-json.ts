// The JSON form of @grafana/schema's Dashboard type (Grafana 11.6).
//
// A dashboard file holds enum members as their values ("absolute", "value"), and TypeScript
// does not let a string literal stand for a member of a string enum. JsonOf<T> is T with each
// string enum replaced by the union of its values; everything else (required keys, optional
// keys, excess keys, numeric enums, nested panels and variables) is checked as in T.
import type { Dashboard } from '@grafana/schema';

type JsonOf<T> = 0 extends 1 & T
  ? T
  : T extends string
    ? `${T}`
    : T extends number | boolean | null | undefined
      ? T
      : T extends Array<infer U>
        ? Array<JsonOf<U>>
        : T extends object
          ? { [K in keyof T]: JsonOf<T[K]> }
          : T;

export type DashboardJson = JsonOf<Dashboard>;
