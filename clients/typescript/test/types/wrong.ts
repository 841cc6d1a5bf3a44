// Must NOT compile: `qty` is a number in the contract (the Rust test checks tsc's error).
import { Client } from "../../src/index.js";
import { routes } from "../../src/generated/inventory.js";

export async function wrong(c: Client): Promise<number> {
  return await c.call(routes.stockAdd, { sku: "bolt-m6", qty: "forty" });
}
