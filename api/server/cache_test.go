package server

import "testing"

// TestAnswerCache: answers are kept for one height only; a newer height
// replaces them, an older one never overwrites, and the size is bounded.
func TestAnswerCache(t *testing.T) {
	var c answerCache
	a := func(i int64) cachedAnswer { return cachedAnswer{index: i, body: []byte{byte(i)}} }
	steps := []struct {
		name   string
		put    bool
		height int64
		key    string
		val    int64
		want   int64 // for gets: the index found, 0 none
	}{
		{name: "empty", height: 5, key: "/a", want: 0},
		{name: "put at 5", put: true, height: 5, key: "/a", val: 3},
		{name: "hit at 5", height: 5, key: "/a", want: 3},
		{name: "other key misses", height: 5, key: "/b", want: 0},
		{name: "other height misses", height: 6, key: "/a", want: 0},
		{name: "older put ignored", put: true, height: 4, key: "/a", val: 1},
		{name: "still 5's answer", height: 5, key: "/a", want: 3},
		{name: "put at 6 drops 5", put: true, height: 6, key: "/b", val: 6},
		{name: "5 gone", height: 5, key: "/a", want: 0},
		{name: "6 there", height: 6, key: "/b", want: 6},
	}
	for _, st := range steps {
		if st.put {
			c.put(st.height, st.key, a(st.val))
			continue
		}
		got, ok := c.get(st.height, st.key)
		if ok != (st.want != 0) || got.index != st.want {
			t.Errorf("%s: get(%d, %s) = %d %v, want %d", st.name, st.height, st.key, got.index, ok, st.want)
		}
	}
	for i := range maxCached + 10 {
		c.put(7, string(rune('a'+i%26))+string(rune(i)), a(1))
	}
	if len(c.answers) > maxCached {
		t.Errorf("%d answers cached, want at most %d", len(c.answers), maxCached)
	}
}
