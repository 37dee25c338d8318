package identity

import (
	"testing"

	"github.com/palisade-mesh/palisade/kvstore"
)

func mustLabels(t testing.TB, ss ...string) Labels {
	t.Helper()
	l, err := ParseLabels(ss...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPlanner_Next(t *testing.T) {
	rng, err := newIDRange(DefaultLayout, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := mustLabels(t, "k8s:app=web", "k8s:io.kubernetes.pod.namespace=default")
	other := mustLabels(t, "k8s:app=db")
	id := rng.at(300)
	id2 := rng.at(400)
	cand := rng.at(500)
	present := func(raw []byte, rev int64) keyState { return keyState{present: true, rev: rev, raw: raw} }
	obs := func(value keyState, masterID ID, master keyState) *observation {
		return &observation{value: value, masterID: masterID, master: master}
	}
	foreignCluster := ID(2<<16 | 300)

	cases := []struct {
		name      string
		want      ID // planner's held identity, 0 for allocation
		obs       *observation
		hint      ID
		candidate ID
		kind      planKind
		id        ID
	}{
		{name: "cache knows the labels: reference optimistically", hint: id, kind: planRef, id: id},
		{name: "nothing known, no candidate: pick", kind: planPick},
		{name: "nothing known: create at candidate", candidate: cand, kind: planCreate, id: cand},
		{name: "holder: reference its own identity optimistically", want: id, hint: id2, kind: planRef, id: id},
		{name: "value and master ours: reference",
			obs:  obs(present(encodeValue(id), 5), id, present(encodeMaster(ours), 5)),
			kind: planRef, id: id},
		{name: "master with equivalent but differently encoded labels: reference",
			obs:  obs(present(encodeValue(id), 5), id, present([]byte(`{"labels": "`+ours.String()+`"}`), 5)),
			kind: planRef, id: id},
		{name: "value points at a master not read yet: reference it",
			obs:  obs(present(encodeValue(id2), 7), cand, present(encodeMaster(other), 3)),
			kind: planRef, id: id2},
		{name: "value without master: restore master",
			obs:  obs(present(encodeValue(id), 5), id, keyState{}),
			kind: planRestore, id: id},
		{name: "value points at other labels' master: replace the orphan value",
			obs:       obs(present(encodeValue(id), 5), id, present(encodeMaster(other), 6)),
			candidate: cand, kind: planCreate, id: cand},
		{name: "value names another cluster's identity: orphan",
			obs:       obs(present(encodeValue(foreignCluster), 5), cand, present(encodeMaster(other), 6)),
			candidate: cand, kind: planCreate, id: cand},
		{name: "malformed value: orphan",
			obs:       obs(present([]byte("x"), 5), cand, keyState{}),
			candidate: cand, kind: planCreate, id: cand},
		{name: "candidate taken, value missing: pick again",
			obs:  obs(keyState{}, cand, present(encodeMaster(other), 6)),
			kind: planPick},
		{name: "orphan master with our labels: adopt it",
			obs:  obs(keyState{}, cand, present(encodeMaster(ours), 6)),
			kind: planRestore, id: cand},
		{name: "holder: value and master gone: restore both",
			want: id, obs: obs(keyState{}, id, keyState{}),
			kind: planRestore, id: id},
		{name: "holder: value gone, master ours: restore value",
			want: id, obs: obs(keyState{}, id, present(encodeMaster(ours), 4)),
			kind: planRestore, id: id},
		{name: "holder: number taken by other labels",
			want: id, obs: obs(keyState{}, id, present(encodeMaster(other), 4)),
			kind: planLost, id: id},
		{name: "holder: labels got another number",
			want: id, obs: obs(present(encodeValue(id2), 9), id, keyState{}),
			kind: planLost, id: id},
		{name: "holder: value ours, master taken by other labels",
			want: id, obs: obs(present(encodeValue(id), 9), id, present(encodeMaster(other), 10)),
			kind: planLost, id: id},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPlanner(ours, rng, c.want)
			got := p.next(c.obs, c.hint, c.candidate)
			if got.kind != c.kind || got.id != c.id {
				t.Fatalf("next = kind %d id %d, want kind %d id %d", got.kind, got.id, c.kind, c.id)
			}
			if (got.kind == planRef || got.kind == planRestore || got.kind == planCreate) && len(got.ifs) < 2 {
				t.Fatalf("plan %d has %d conditions; every write must be conditioned on the value and a master key", got.kind, len(got.ifs))
			}
		})
	}
}

func TestPlanner_OpsWriteAllThreeKeys(t *testing.T) {
	rng, _ := newIDRange(DefaultLayout, 1, 0, 0)
	lbls := mustLabels(t, "k8s:app=web")
	p := newPlanner(lbls, rng, 0)
	then, els := p.ops(rng.at(256), "node-1", kvstore.LeaseID(7))
	if len(then) != 3 || len(els) != 2 {
		t.Fatalf("then %d ops, else %d ops; want 3 and 2", len(then), len(els))
	}
}

func TestObserve_MatchesKeys(t *testing.T) {
	lbls := mustLabels(t, "k8s:app=web")
	d := lbls.Digest()
	id := ID(1<<16 | 256)
	obs := observe([]kvstore.KeyValue{
		{Key: masterKey(id), Value: encodeMaster(lbls), ModRevision: 4},
		{Key: valueKey(d), Value: encodeValue(id), ModRevision: 5},
	}, d, id)
	if !obs.value.present || obs.value.rev != 5 || !obs.master.present || obs.master.rev != 4 || obs.masterID != id {
		t.Fatalf("observation %+v", obs)
	}
	obs = observe(nil, d, id)
	if obs.value.present || obs.master.present {
		t.Fatalf("empty gets observed %+v", obs)
	}
}
