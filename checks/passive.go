package checks

import (
	"errors"

	"github.com/bftmon/bftmon/app/types"
)

// errPassive is New's error for a passive check: it has nothing to probe.
var errPassive = errors.New("passive check: results are submitted with `bftmon submit` or POST /v1/observe, not probed")

func init() {
	// Registered, so that Kinds lists it and New explains instead of calling
	// the kind unknown; the scheduler never builds a prober for it.
	register("passive", func(types.Check) (Prober, error) { return nil, errPassive })
}

// IsPassive says whether c is a passive check: never probed, its results
// are submitted (Scheduler.Report).
func IsPassive(c types.Check) bool { return c.Kind == "passive" }
