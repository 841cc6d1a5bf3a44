// Compiles: the payload is the route's request type. (`tsc` checks it in the Rust test
// `tests/tests/typescript.rs`, next to `wrong.ts`, which must not compile.)
import { Client } from "../../src/index.js";
import { routes } from "../../src/generated/inventory.js";

export async function ok(c: Client): Promise<number> {
  const left: number = await c.call(routes.stockTake, { sku: "bolt-m6", qty: 2 });
  const all = await c.call(routes.stockReport, null);
  return left + all.length;
}
