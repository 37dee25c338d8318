package policy

import (
	"slices"
	"sync"

	"github.com/palisade-mesh/palisade/identity"
)

// SelectionUser is told when the identities a cached selector matches change. It is called with
// the cache locked: it must not call back into the cache.
type SelectionUser interface {
	SelectionsChanged(cs *CachedSelector, added, removed []identity.ID)
}

// CachedSelector is one distinct selector and the identities it currently matches.
type CachedSelector struct {
	sel        *selector
	refs       int
	selections []identity.ID // sorted; replaced, never modified in place
	users      map[SelectionUser]struct{}
}

// String is the canonical form of the selector.
func (cs *CachedSelector) String() string { return cs.sel.key }

// selects reports whether id is currently selected. Callers hold the cache lock.
func (cs *CachedSelector) selects(id identity.ID) bool {
	_, ok := slices.BinarySearch(cs.selections, id)
	return ok
}

// SelectorCache keeps, for each distinct selector in use, the identities it matches. Adding an
// identity only tries the selectors indexed under one of its labels (plus those that cannot be
// indexed), so the cost of a new identity does not grow with the number of selectors.
type SelectorCache struct {
	mu         sync.RWMutex
	identities map[identity.ID]*identityInfo
	byLabel    map[string]map[identity.ID]struct{} // "key=value" -> identities with that label
	cidrIDs    map[identity.ID]struct{}            // identities a CIDR selector may match

	selectors  map[string]*CachedSelector
	anchored   map[string]map[*CachedSelector]struct{}
	unanchored map[*CachedSelector]struct{}
	cidrSels   map[*CachedSelector]struct{}
}

// NewSelectorCache returns an empty cache.
func NewSelectorCache() *SelectorCache {
	return &SelectorCache{
		identities: map[identity.ID]*identityInfo{},
		byLabel:    map[string]map[identity.ID]struct{}{},
		cidrIDs:    map[identity.ID]struct{}{},
		selectors:  map[string]*CachedSelector{},
		anchored:   map[string]map[*CachedSelector]struct{}{},
		unanchored: map[*CachedSelector]struct{}{},
		cidrSels:   map[*CachedSelector]struct{}{},
	}
}

// Selections returns the identities cs matches, sorted. The slice must not be modified.
func (c *SelectorCache) Selections(cs *CachedSelector) []identity.ID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return cs.selections
}

// Labels returns the labels of a known identity.
func (c *SelectorCache) Labels(id identity.ID) (identity.Labels, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	info, ok := c.identities[id]
	if !ok {
		return nil, false
	}
	return info.labels, true
}

// Len returns the number of identities and of selectors in the cache.
func (c *SelectorCache) Len() (identities, selectors int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.identities), len(c.selectors)
}

// add returns the cache entry of sel, creating it (and computing its selections) if needed, and
// takes a reference on it.
func (c *SelectorCache) add(sel *selector) *CachedSelector {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs, ok := c.selectors[sel.key]; ok {
		cs.refs++
		return cs
	}
	cs := &CachedSelector{sel: sel, refs: 1, users: map[SelectionUser]struct{}{}}
	c.selectors[sel.key] = cs
	switch {
	case sel.kind == cidrSelector:
		c.cidrSels[cs] = struct{}{}
		cs.selections = c.scan(sel, c.cidrIDs)
	case sel.kind == fqdnSelector:
	default:
		anchors := sel.anchors()
		if anchors == nil {
			c.unanchored[cs] = struct{}{}
			cs.selections = c.scanAll(sel)
			break
		}
		for _, a := range anchors {
			set := c.anchored[a]
			if set == nil {
				set = map[*CachedSelector]struct{}{}
				c.anchored[a] = set
			}
			set[cs] = struct{}{}
			cs.selections = append(cs.selections, c.scan(sel, c.byLabel[a])...)
		}
		slices.Sort(cs.selections)
		cs.selections = slices.Compact(cs.selections)
	}
	return cs
}

func (c *SelectorCache) scan(sel *selector, candidates map[identity.ID]struct{}) []identity.ID {
	var out []identity.ID
	for id := range candidates {
		if sel.matches(id, c.identities[id]) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (c *SelectorCache) scanAll(sel *selector) []identity.ID {
	var out []identity.ID
	for id, info := range c.identities {
		if sel.matches(id, info) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// release drops a reference; the entry goes away with its last one.
func (c *SelectorCache) release(cs *CachedSelector) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs.refs--
	if cs.refs > 0 {
		return
	}
	delete(c.selectors, cs.sel.key)
	delete(c.unanchored, cs)
	delete(c.cidrSels, cs)
	for _, a := range cs.sel.anchors() {
		if set := c.anchored[a]; set != nil {
			delete(set, cs)
			if len(set) == 0 {
				delete(c.anchored, a)
			}
		}
	}
}

func (c *SelectorCache) subscribe(cs *CachedSelector, u SelectionUser) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs.users[u] = struct{}{}
}

func (c *SelectorCache) unsubscribe(cs *CachedSelector, u SelectionUser) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(cs.users, u)
}

// selectionChange is what happened to one selector during an update.
type selectionChange struct {
	added, removed []identity.ID
}

// UpdateIdentities adds (or replaces) and deletes identities, updates every selector that matches
// them, and tells the selectors' users what changed. It returns the number of selectors whose
// selections changed.
func (c *SelectorCache) UpdateIdentities(added map[identity.ID]identity.Labels, deleted []identity.ID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	changes := map[*CachedSelector]*selectionChange{}
	change := func(cs *CachedSelector) *selectionChange {
		ch := changes[cs]
		if ch == nil {
			ch = &selectionChange{}
			changes[cs] = ch
		}
		return ch
	}
	remove := func(id identity.ID) {
		info, ok := c.identities[id]
		if !ok {
			return
		}
		c.forCandidates(id, info, func(cs *CachedSelector) {
			if cs.selects(id) {
				ch := change(cs)
				ch.removed = append(ch.removed, id)
			}
		})
		c.unindex(id, info)
	}
	for _, id := range deleted {
		remove(id)
	}
	for id, lbls := range added {
		if old, ok := c.identities[id]; ok {
			if old.labels.Equal(lbls) {
				continue
			}
			remove(id)
		}
		info := newIdentityInfo(id, lbls)
		c.index(id, info)
		c.forCandidates(id, info, func(cs *CachedSelector) {
			if cs.sel.matches(id, info) {
				ch := change(cs)
				ch.added = append(ch.added, id)
			}
		})
	}
	for cs, ch := range changes {
		// An identity replaced with other labels may be both removed and added: it stays.
		ch.added, ch.removed = netChange(ch.added, ch.removed)
		if len(ch.added) == 0 && len(ch.removed) == 0 {
			delete(changes, cs)
			continue
		}
		cs.selections = applyChange(cs.selections, ch.added, ch.removed)
	}
	// Users hear about a selector only once all selectors are up to date, so whatever they read
	// from the cache is consistent.
	for cs, ch := range changes {
		for u := range cs.users {
			u.SelectionsChanged(cs, ch.added, ch.removed)
		}
	}
	return len(changes)
}

// forCandidates calls fn once for each selector that could match the identity.
func (c *SelectorCache) forCandidates(id identity.ID, info *identityInfo, fn func(*CachedSelector)) {
	seen := map[*CachedSelector]struct{}{}
	for _, l := range info.labels {
		for cs := range c.anchored[anchor(l.Key, l.Value)] {
			if _, dup := seen[cs]; !dup {
				seen[cs] = struct{}{}
				fn(cs)
			}
		}
	}
	for cs := range c.unanchored {
		fn(cs)
	}
	if _, ok := c.cidrIDs[id]; ok {
		for cs := range c.cidrSels {
			fn(cs)
		}
	}
}

func (c *SelectorCache) index(id identity.ID, info *identityInfo) {
	c.identities[id] = info
	for _, l := range info.labels {
		a := anchor(l.Key, l.Value)
		set := c.byLabel[a]
		if set == nil {
			set = map[identity.ID]struct{}{}
			c.byLabel[a] = set
		}
		set[id] = struct{}{}
	}
	if info.prefix.IsValid() || info.world.IsValid() || id == identity.IDWorld {
		c.cidrIDs[id] = struct{}{}
	}
}

func (c *SelectorCache) unindex(id identity.ID, info *identityInfo) {
	delete(c.identities, id)
	delete(c.cidrIDs, id)
	for _, l := range info.labels {
		a := anchor(l.Key, l.Value)
		if set := c.byLabel[a]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(c.byLabel, a)
			}
		}
	}
}

func netChange(added, removed []identity.ID) (a, r []identity.ID) {
	slices.Sort(added)
	slices.Sort(removed)
	for _, id := range added {
		if _, both := slices.BinarySearch(removed, id); !both {
			a = append(a, id)
		}
	}
	for _, id := range removed {
		if _, both := slices.BinarySearch(added, id); !both {
			r = append(r, id)
		}
	}
	return a, r
}

// applyChange returns sel plus added minus removed, sorted. Readers may hold sel, so it is never
// modified in place; appending past its end (new identities usually have the highest numbers) is
// safe because their view keeps its length.
func applyChange(sel, added, removed []identity.ID) []identity.ID {
	if len(removed) == 0 && len(added) > 0 && (len(sel) == 0 || added[0] > sel[len(sel)-1]) {
		return append(sel, added...)
	}
	out := make([]identity.ID, 0, len(sel)+len(added)-len(removed))
	for _, id := range sel {
		if _, gone := slices.BinarySearch(removed, id); !gone {
			out = append(out, id)
		}
	}
	out = append(out, added...)
	slices.Sort(out)
	return slices.Compact(out)
}

// setFQDNSelections replaces the identities of an FQDN selector and notifies its users.
func (c *SelectorCache) setFQDNSelections(cs *CachedSelector, ids []identity.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var added, removed []identity.ID
	for _, id := range ids {
		if !cs.selects(id) {
			added = append(added, id)
		}
	}
	for _, id := range cs.selections {
		if _, ok := slices.BinarySearch(ids, id); !ok {
			removed = append(removed, id)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	cs.selections = ids
	for u := range cs.users {
		u.SelectionsChanged(cs, added, removed)
	}
}
