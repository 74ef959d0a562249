// Compiles ledger_bridge/contracts/*.sol with the pinned solc (npm) into artifacts/<Name>.json.
// Usage: node build_contracts.mjs [OUT_DIR]   (default: artifacts, next to this file)
// Deterministic: sorted sources, fixed settings, no absolute paths, metadata hash off, stable JSON.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(process.argv[2] ?? path.join(here, "artifacts"));
const contractsDir = path.join(here, "contracts");
const nodeModules = path.join(here, "node_modules");

const settings = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "none" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const sources = {};
for (const name of fs.readdirSync(contractsDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`contracts/${name}`] = { content: fs.readFileSync(path.join(contractsDir, name), "utf8") };
}

function findImports(importPath) {
  // Only npm packages are importable; the path is resolved inside node_modules and nowhere else.
  const resolved = path.resolve(nodeModules, importPath);
  if (!resolved.startsWith(nodeModules + path.sep)) return { error: `import outside node_modules: ${importPath}` };
  try {
    return { contents: fs.readFileSync(resolved, "utf8") };
  } catch {
    return { error: `not found: ${importPath}` };
  }
}

const input = { language: "Solidity", sources, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
for (const e of output.errors ?? []) console.error(e.formattedMessage);
// Warnings are errors too: the committed artifacts come from warning-free sources.
if ((output.errors ?? []).length > 0) process.exit(1);

fs.mkdirSync(outDir, { recursive: true });
const compiler = { name: "solc", version: solc.version(), settings: { evmVersion: settings.evmVersion,
  optimizer: settings.optimizer, metadata: settings.metadata } };
for (const source of Object.keys(sources)) {
  for (const [name, c] of Object.entries(output.contracts[source])) {
    if (c.evm.bytecode.object === "") continue; // interfaces and abstract contracts: nothing to deploy
    const artifact = {
      contractName: name,
      sourceName: source,
      compiler,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    const file = path.join(outDir, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(artifact, null, 2) + "\n");
    console.log(`${path.relative(process.cwd(), file)}: ${(c.evm.deployedBytecode.object.length / 2)} bytes deployed`);
  }
}
