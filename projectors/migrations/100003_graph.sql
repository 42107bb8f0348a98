-- The relationship graph (default backend): nodes and edges with their
-- properties. Node ids are '<label>:<key>'; an aggregate's node keeps `seq`,
-- the last event sequence applied, so a re-delivered event changes nothing.
CREATE TABLE IF NOT EXISTS graph_nodes (
    id    text PRIMARY KEY,
    label text NOT NULL,
    key   text NOT NULL,
    props jsonb NOT NULL DEFAULT '{}'::jsonb,
    seq   bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS graph_nodes_label ON graph_nodes (label);

CREATE TABLE IF NOT EXISTS graph_edges (
    src   text NOT NULL,
    rel   text NOT NULL,
    dst   text NOT NULL,
    -- tells apart several edges of one type between two nodes (an attempt)
    key   text NOT NULL DEFAULT '',
    props jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (src, rel, dst, key)
);
CREATE INDEX IF NOT EXISTS graph_edges_dst ON graph_edges (dst, rel);
