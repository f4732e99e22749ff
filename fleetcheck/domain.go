package fleetcheck

// Resumption domains: nodes that can resume each other's tickets. Each
// listener has its own session context (nginx: per server block, http and
// stream apart; OpenSSL refuses a session from another session-id context),
// and Go nodes never resume OpenSSL tickets: such nodes share the keyring
// but never each other's tickets. The matrix is checked inside each domain;
// every other check (current, next, previous and retired keys) runs on
// every node.

// domains groups node indices by Node.Domain, in the order of Config.Nodes
// (the empty domain is one domain like any other).
func domains(nodes []Node) (groups [][]int, of []int) {
	index := map[string]int{}
	of = make([]int, len(nodes))
	for i, n := range nodes {
		g, ok := index[n.Domain]
		if !ok {
			g = len(groups)
			index[n.Domain] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
		of[i] = g
	}
	return groups, of
}

// matrixTargets lists the nodes node i's ticket is offered to this round:
// targets inside its domain (full up to MatrixFull nodes, else sampled).
func (c *Checker) matrixTargets(i, round int) []int {
	group := c.groups[c.groupOf[i]]
	pos := 0
	for p, j := range group {
		if j == i {
			pos = p
		}
	}
	var out []int
	for _, t := range c.targets(pos, len(group), round) {
		out = append(out, group[t])
	}
	return out
}

// sampled reports whether some domain is above MatrixFull.
func (c *Checker) sampled() bool {
	for _, g := range c.groups {
		if len(g) > c.cfg.MatrixFull {
			return true
		}
	}
	return false
}
