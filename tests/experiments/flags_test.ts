import { equal, throws } from "node:assert/strict";
import { flagNumber } from "../../experiments/flags.ts";

Deno.test("numeric flags accept their kind and name the flag and value otherwise", () => {
  equal(flagNumber("lr", "3e-4"), 3e-4);
  equal(flagNumber("dropout", "0"), 0);
  equal(flagNumber("seed", "0", "integer"), 0);
  equal(flagNumber("steps", "12", "positive integer"), 12);
  throws(() => flagNumber("lr", "-1"), /^FlagError: --lr -1: expected a non-negative number$/);
  throws(() => flagNumber("lr", "abc"), /--lr abc: expected a non-negative number/);
  throws(() => flagNumber("lr", "Infinity"), /--lr Infinity: expected a non-negative number/);
  throws(() => flagNumber("seed", "2.5", "integer"), /--seed 2.5: expected a non-negative integer/);
  throws(() => flagNumber("seed", "-3", "integer"), /--seed -3: expected a non-negative integer/);
  throws(() => flagNumber("steps", "0", "positive integer"), /--steps 0: expected a positive integer/);
  throws(() => flagNumber("lr", ""), /--lr "": expected a non-negative number/, "empty is not 0");
  throws(() => flagNumber("steps", "1e300", "integer"), /--steps 1e300/, "beyond exact integers");
});
