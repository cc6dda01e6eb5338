// Parses LogQL queries (one per line on stdin) with Grafana's own LogQL grammar and prints,
// for each, "ok" or "error <offset> <text around it>". Exit 0 either way.
import { parser } from "@grafana/lezer-logql";
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin });
for await (const query of lines) {
  if (!query.trim()) continue;
  const tree = parser.parse(query);
  let error = null;
  tree.iterate({
    enter: (node) => {
      if (error === null && node.type.isError) error = node.from;
    },
  });
  console.log(error === null ? "ok" : `error ${error} ${JSON.stringify(query.slice(Math.max(0, error - 20), error + 20))}`);
}
