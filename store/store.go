// Package store is the authenticated, versioned key/value store under the
// application: an IAVL tree (github.com/cosmos/iavl) on goleveldb, or in
// memory for tests. Its root hash is the app hash; a block costs
// O(changed keys × log(state)), and past versions stay readable for queries
// and proofs until pruned.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	dbm "github.com/cosmos/cosmos-db"
	"github.com/cosmos/iavl"
	idb "github.com/cosmos/iavl/db"
	ics23 "github.com/cosmos/ics23/go"
)

// KeepVersions is how many committed versions are kept for reads and proofs
// unless SetKeepVersions says otherwise.
const KeepVersions = 1000

const cacheSize = 100_000

// Store is a versioned IAVL tree. Writes go to the working version; Commit
// saves it. Reads through Reader use the last committed version and are safe
// to use concurrently with writes.
type Store struct {
	mu      sync.RWMutex // guards tree.SaveVersion against concurrent snapshot reads
	tree    *iavl.MutableTree
	db      idb.DB
	closeDB func() error // the database under the tree (nil in memory)
	// broken is the first failed commit's error: after a failed flush the
	// IAVL tree must not be written again (its batch is left in a state
	// whose next use crashes the process without naming the disk), so
	// every later commit fails with it instead.
	broken error
	keep   int64 // versions kept (KeepVersions unless set)
	// held counts the holds on each version being exported (Hold): pruning
	// stops below the lowest, and IAVL, which refuses to delete a version
	// an exporter reads, would otherwise fail the commit that prunes it.
	held map[int64]int
}

// Open opens (or creates) the store in dir.
func Open(dir string) (*Store, error) {
	db, err := dbm.NewGoLevelDB("app", dir, nil)
	if err != nil {
		return nil, fmt.Errorf("open app store in %s: %w", dir, err)
	}
	s, err := newStore(idb.NewWrapper(db))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open app store in %s: %w", dir, err)
	}
	s.closeDB = db.Close
	return s, nil
}

// NewMemory returns an empty store kept in memory.
func NewMemory() *Store {
	s, err := newStore(idb.NewMemDB())
	if err != nil {
		panic(err) // an empty memory database cannot fail to load
	}
	return s
}

func newStore(db idb.DB) (*Store, error) {
	tree := iavl.NewMutableTree(db, cacheSize, false, iavl.NewNopLogger())
	if _, err := tree.Load(); err != nil {
		return nil, fmt.Errorf("load tree: %w", err)
	}
	return &Store{tree: tree, db: db, keep: KeepVersions, held: map[int64]int{}}, nil
}

// Get reads a key from the working version (nil if absent).
func (s *Store) Get(key []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.tree.Get(key)
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	return v, nil
}

// Set writes a key in the working version.
func (s *Store) Set(key, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.tree.Set(key, value); err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// Delete removes a key from the working version.
func (s *Store) Delete(key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.tree.Remove(key); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}

// Iterate calls fn for each key with the prefix in the working version, in
// key order, until fn returns false.
func (s *Store) Iterate(prefix []byte, fn func(key, value []byte) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, err := s.tree.Iterator(prefix, prefixEnd(prefix), true)
	if err != nil {
		return fmt.Errorf("iterate %q: %w", prefix, err)
	}
	return drain(it, fn)
}

// WorkingHash is the root hash of the working version.
func (s *Store) WorkingHash() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tree.WorkingHash()
}

// Commit saves the working version and returns its hash and number. Old
// versions beyond KeepVersions are pruned every 100 versions, but none at or
// above a held one (Hold): those go at a later prune, once released.
func (s *Store) Commit() ([]byte, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return nil, 0, s.broken
	}
	hash, version, err := s.tree.SaveVersion()
	if err != nil {
		s.broken = fmt.Errorf("commit version %d: %w (a full or failing disk? the store takes no more writes until the node restarts)", s.tree.Version()+1, err)
		return nil, 0, s.broken
	}
	if to := s.pruneTo(version); to > 0 && version%100 == 0 {
		if err := s.tree.DeleteVersionsTo(to); err != nil {
			return nil, 0, fmt.Errorf("prune versions to %d: %w", to, err)
		}
	}
	return hash, version, nil
}

// pruneTo is the highest version that committing version lets Commit
// delete: keep versions back, and below every held version (0: none).
func (s *Store) pruneTo(version int64) int64 {
	to := version - s.keep
	for v := range s.held {
		to = min(to, v-1)
	}
	return max(to, 0)
}

// Hold keeps a committed version from being pruned until release is
// called (once; later calls do nothing), whatever keep_versions says: the
// snapshot manager holds the version it exports from the commit that
// starts the snapshot until the export ends. Holds nest.
func (s *Store) Hold(version int64) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version < 1 || version > s.tree.Version() || !s.tree.VersionExists(version) {
		return nil, fmt.Errorf("hold version %d: %w (the store has versions up to %d, keep_versions %d)", version, ErrNoVersion, s.tree.Version(), s.keep)
	}
	s.held[version]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.held[version]--; s.held[version] <= 0 {
				delete(s.held, version)
			}
		})
	}, nil
}

// SetKeepVersions sets how many committed versions are kept for reads,
// proofs and snapshots being exported (at least 1).
func (s *Store) SetKeepVersions(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keep = max(n, 1)
}

// ExportNode is one node of the tree as a snapshot carries it.
type ExportNode = iavl.ExportNode

// Export calls fn with every node of committed version, in the order
// Import takes them. It takes the store's lock only for each node read, so
// blocks keep committing meanwhile, and holds the version (Hold) until it
// returns so that no commit prunes it under the export. A caller that starts
// the export later than the commit of its version (in a goroutine) holds it
// from that commit on, or a prune may come first.
func (s *Store) Export(version int64, fn func(*ExportNode) error) error {
	release, err := s.Hold(version)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer release()
	s.mu.RLock()
	t, err := s.tree.GetImmutable(version)
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("export version %d: %w: %v", version, ErrNoVersion, err)
	}
	ex, err := t.Export()
	if err != nil {
		return fmt.Errorf("export version %d: %w", version, err)
	}
	defer ex.Close()
	for {
		s.mu.RLock()
		n, err := ex.Next()
		s.mu.RUnlock()
		if errors.Is(err, iavl.ErrorExportDone) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("export version %d: %w", version, err)
		}
		if err := fn(n); err != nil {
			return err
		}
	}
}

// Importer writes an exported tree into an empty store.
type Importer struct {
	s   *Store
	imp *iavl.Importer
}

// Import starts importing version into the store, which must hold no
// version yet (a fresh data directory).
func (s *Store) Import(version int64) (*Importer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.tree.Version(); v != 0 {
		return nil, fmt.Errorf("import version %d: the store already holds version %d (restore only into an empty data directory)", version, v)
	}
	imp, err := s.tree.Import(version)
	if err != nil {
		return nil, fmt.Errorf("import version %d: %w", version, err)
	}
	return &Importer{s: s, imp: imp}, nil
}

// Add adds the next exported node.
func (im *Importer) Add(n *ExportNode) error {
	im.s.mu.Lock()
	defer im.s.mu.Unlock()
	if err := im.imp.Add(n); err != nil {
		return fmt.Errorf("import node: %w", err)
	}
	return nil
}

// Commit writes the imported tree and makes its version the store's latest.
func (im *Importer) Commit() error {
	im.s.mu.Lock()
	defer im.s.mu.Unlock()
	if err := im.imp.Commit(); err != nil {
		return fmt.Errorf("commit imported tree: %w", err)
	}
	return nil
}

// Close abandons an import not committed.
func (im *Importer) Close() {
	im.s.mu.Lock()
	defer im.s.mu.Unlock()
	im.imp.Close()
}

// Version is the last committed version (0 if none).
func (s *Store) Version() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tree.Version()
}

// Hash is the root hash of the last committed version.
func (s *Store) Hash() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tree.Hash()
}

// ErrNoVersion is returned when a version is not (or no longer) kept.
var ErrNoVersion = errors.New("version not available")

// Reader returns a read-only view of a committed version (0: the latest).
func (s *Store) Reader(version int64) (*Reader, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if version == 0 {
		version = s.tree.Version()
	}
	if version == 0 {
		return &Reader{}, nil
	}
	t, err := s.tree.GetImmutable(version)
	if err != nil {
		return nil, fmt.Errorf("read version %d: %w: %v", version, ErrNoVersion, err)
	}
	return &Reader{tree: t, mu: &s.mu}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.tree.Close()
	if s.closeDB != nil {
		err = errors.Join(err, s.closeDB())
	}
	return err
}

// Reader reads one committed version.
type Reader struct {
	tree *iavl.ImmutableTree // nil: the empty state before the first commit
	mu   *sync.RWMutex
}

// Version is the version the reader reads.
func (r *Reader) Version() int64 {
	if r.tree == nil {
		return 0
	}
	return r.tree.Version()
}

// Hash is the root hash of the version read (the app hash at that height).
func (r *Reader) Hash() []byte {
	if r.tree == nil {
		return nil
	}
	return r.tree.Hash()
}

// Get reads a key (nil if absent).
func (r *Reader) Get(key []byte) ([]byte, error) {
	if r.tree == nil {
		return nil, nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.tree.Get(key)
	if err != nil {
		return nil, fmt.Errorf("get %q at %d: %w", key, r.tree.Version(), err)
	}
	return v, nil
}

// Iterate calls fn for each key with the prefix, in key order, until fn
// returns false.
func (r *Reader) Iterate(prefix []byte, fn func(key, value []byte) bool) error {
	if r.tree == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	it, err := r.tree.Iterator(prefix, prefixEnd(prefix), true)
	if err != nil {
		return fmt.Errorf("iterate %q: %w", prefix, err)
	}
	return drain(it, fn)
}

// ErrEmptyValue is returned by Proof for a key that holds an empty value:
// ICS23 cannot prove one (its leaf operation refuses an empty value), nor
// the absence of a key beside one. The application never stores one (every
// record it writes carries a height, an id or a name), so this is a bug.
var ErrEmptyValue = errors.New("key holds an empty value, which ICS23 cannot prove")

// Proof returns an ICS23 proof of key against the version's hash: an
// existence proof of its value if it is present, a non-existence proof
// (the neighbours on each side, proven adjacent) if it is absent.
func (r *Reader) Proof(key []byte) (*ics23.CommitmentProof, error) {
	if r.tree == nil {
		return nil, fmt.Errorf("prove %q: %w (nothing committed yet)", key, ErrNoVersion)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("prove an empty key: ICS23 proves only non-empty keys")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.tree.Get(key)
	if err != nil {
		return nil, fmt.Errorf("prove %q at %d: %w", key, r.tree.Version(), err)
	}
	var p *ics23.CommitmentProof
	if v != nil {
		p, err = r.tree.GetMembershipProof(key)
	} else {
		p, err = r.tree.GetNonMembershipProof(key)
	}
	if err != nil {
		return nil, fmt.Errorf("prove %q at %d: %w", key, r.tree.Version(), err)
	}
	for _, e := range []*ics23.ExistenceProof{p.GetExist(), p.GetNonexist().GetLeft(), p.GetNonexist().GetRight()} {
		if e != nil && len(e.Value) == 0 {
			return nil, fmt.Errorf("prove %q at %d: %q: %w", key, r.tree.Version(), e.Key, ErrEmptyValue)
		}
	}
	return p, nil
}

type iterator interface {
	Valid() bool
	Next()
	Key() []byte
	Value() []byte
	Error() error
	Close() error
}

func drain(it iterator, fn func(key, value []byte) bool) error {
	defer it.Close()
	for ; it.Valid(); it.Next() {
		if !fn(bytes.Clone(it.Key()), bytes.Clone(it.Value())) {
			break
		}
	}
	return it.Error()
}

// prefixEnd returns the smallest key greater than every key with the prefix
// (nil: no bound).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
