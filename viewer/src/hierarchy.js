// The map's cluster hierarchy (HDBSCAN's condensed tree, from /api/maps/{name}/hierarchy.bin):
// nodes 0..m-1 with the root 0 and every child numbered after its parent. Pure logic, no DOM.
//
// A node's items: the points that leave the tree inside its subtree, plus every point of a flat
// cluster inside it (noise handed to a cluster counts with it), so a flat cluster's node holds
// exactly that cluster and a step up and back down returns to the same selection.

export class Tree {
  /** ``cols`` are the container's columns (node_parent, node_size, node_cluster, cluster_node,
   * point_node); ``cluster`` is the map's per-point cluster + 1 (0 = noise). */
  constructor(cols, cluster) {
    this.parent = cols.node_parent;
    this.size = cols.node_size;
    this.nodeCluster = cols.node_cluster;
    this.clusterNode = cols.cluster_node;
    this.pointNode = cols.point_node;
    this.cluster = cluster;
    const m = this.parent.length;
    this.m = m;
    this.depth = new Int32Array(m);
    this.kids = Array.from({ length: m }, () => []);
    for (let v = 1; v < m; v++) { this.depth[v] = this.depth[this.parent[v]] + 1; this.kids[this.parent[v]].push(v); }
    // flat clusters in each subtree, and the flat cluster a node lies inside (-1: none)
    this.clustersUnder = new Int32Array(m);
    for (let v = 0; v < m; v++) if (this.nodeCluster[v] >= 0) this.clustersUnder[v] = 1;
    for (let v = m - 1; v > 0; v--) this.clustersUnder[this.parent[v]] += this.clustersUnder[v];
    this.inCluster = new Int32Array(m).fill(-1);
    for (let v = 0; v < m; v++) {
      if (this.nodeCluster[v] >= 0) this.inCluster[v] = this.nodeCluster[v];
      else if (v > 0) this.inCluster[v] = this.inCluster[this.parent[v]];
    }
  }

  children(v) { return this.kids[v] || []; }

  siblings(v) { return v > 0 ? this.kids[this.parent[v]].filter((u) => u !== v) : []; }

  /** The node of flat cluster ``c`` (0-based), or -1. */
  nodeOf(c) { return c >= 0 && c < this.clusterNode.length ? this.clusterNode[c] : -1; }

  lca(a, b) {
    const p = this.parent, d = this.depth;
    while (d[a] > d[b]) a = p[a];
    while (d[b] > d[a]) b = p[b];
    while (a !== b) { a = p[a]; b = p[b]; }
    return a;
  }

  /** The smallest node holding the flat clusters of ``points`` (point indices), or -1 when none
   * of them is in a cluster. Returns ``{node, clusters}`` (the distinct flat clusters, 0-based). */
  nodeOfPoints(points) {
    const seen = new Set();
    for (const i of points) { const c = this.cluster[i] - 1; if (c >= 0) seen.add(c); }
    let node = -1;
    for (const c of seen) {
      const v = this.nodeOf(c);
      if (v < 0) continue;
      node = node < 0 ? v : this.lca(node, v);
    }
    return { node, clusters: seen };
  }

  subtree(v) {
    const mask = new Uint8Array(this.m);
    mask[v] = 1;
    for (let u = v + 1; u < this.m; u++) if (mask[this.parent[u]]) mask[u] = 1;
    return mask;
  }

  /** Point indices of node ``v``, ascending; ``eligible`` (i -> bool, or null) filters them. */
  members(v, eligible = null) {
    const sub = this.subtree(v);
    const flat = new Uint8Array(this.clusterNode.length + 1); // by cluster + 1, as the map stores it
    for (let c = 0; c < this.clusterNode.length; c++) if (this.clusterNode[c] >= 0 && sub[this.clusterNode[c]]) flat[c + 1] = 1;
    const pn = this.pointNode, cl = this.cluster, out = [];
    for (let i = 0; i < cl.length; i++) {
      const node = i < pn.length ? pn[i] : -1;
      if ((flat[cl[i]] === 1 || (node >= 0 && sub[node] === 1)) && (!eligible || eligible(i))) out.push(i);
    }
    return out;
  }

  /** What node ``v`` is, in words: "cluster 12", "parent of 3 clusters", "part of cluster 4". */
  describe(v) {
    if (this.nodeCluster[v] >= 0) return `cluster ${this.nodeCluster[v]}`;
    if (this.inCluster[v] >= 0) return `part of cluster ${this.inCluster[v]}`;
    if (v === 0) return `the whole map · ${this.clustersUnder[0]} clusters`;
    return `parent of ${this.clustersUnder[v]} clusters`;
  }
}
