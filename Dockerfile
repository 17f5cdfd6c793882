# One image for both halves of a cStor-style volume: the iSCSI target (the "cstor target"
# Deployment container) and a replica (the pool side). The first argument picks the role:
#   docker run IMAGE target  [cstor-target flags]    (3260 iSCSI, 6060 replica port, 9500 metrics)
#   docker run IMAGE replica [cstor-replica flags]   (dials the target's 6060; 7070 control/rebuild)
#   docker run IMAGE ctl status|resize|...          (the operator CLI; verify: compare replicas)

# ---- build: the native O_DIRECT addon and the TypeScript ------------------------------------
FROM node:20-bookworm AS build
WORKDIR /app
# The toolchain for node-gyp (g++, make, python3) is in this image; the runtime image has none.
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
# npm ci runs the approved install scripts: our addon (node-gyp) and sse4_crc32 (the hardware CRC32C).
RUN npm ci
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY bench ./bench
RUN npm run build \
 && npm prune --omit=dev \
 && rm -rf build/Release/obj.target build/Release/.deps

# ---- runtime: slim Node, production dependencies, compiled output ----------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/build/Release/blockio.node ./build/Release/blockio.node
COPY --from=build /app/dist ./dist
COPY scripts/container-entrypoint.sh /usr/local/bin/cstor
# The target needs no privileges. A replica opens its raw block device: give its pod the disk group
# (supplementalGroups: [6]) or run it as root; see deploy/replica-statefulset.yaml.
USER node
EXPOSE 3260 6060 7070 9500
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.METRICS_PORT||9500)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/local/bin/cstor"]
CMD ["target"]
