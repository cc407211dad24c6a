#!/usr/bin/env node
// Development entry point: runs the compiled ./dist after `npm run build` (there is no ts-node
// here), with oclif's development mode on (NODE_ENV=development, oclif debug output).
import { execute } from '@oclif/core';

await execute({ development: true, dir: import.meta.url });
