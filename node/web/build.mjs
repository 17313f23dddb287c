// Refreshes assets/vendor/ from node_modules (after `npm ci`): the Mermaid browser bundle,
// gzip-compressed (level 9, no timestamp, so the same input gives the same bytes), and a
// manifest with the package version and the SHA-256 of the uncompressed bundle. The Rust
// crate embeds assets/vendor/mermaid.min.js.gz; cargo build needs no npm.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const here = new URL('.', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('node_modules/mermaid/package.json', here)));
const bundle = readFileSync(new URL('node_modules/mermaid/dist/mermaid.min.js', here));
mkdirSync(new URL('assets/vendor/', here), { recursive: true });
writeFileSync(new URL('assets/vendor/mermaid.min.js.gz', here), gzipSync(bundle, { level: 9 }));
const manifest = {
  mermaid: {
    version: pkg.version,
    license: pkg.license,
    file: 'node_modules/mermaid/dist/mermaid.min.js',
    bytes: bundle.length,
    sha256: createHash('sha256').update(bundle).digest('hex'),
  },
};
writeFileSync(new URL('assets/vendor/manifest.json', here), JSON.stringify(manifest, null, 2) + '\n');
console.log(`mermaid ${pkg.version}: ${bundle.length} bytes -> assets/vendor/mermaid.min.js.gz`);
