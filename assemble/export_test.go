package assemble

import "time"

// SetMemLimits sets, for a test, the room a memory scratch needs for a
// step to start there and the room under which it counts as full.
func SetMemLimits(minFree, fullBelow int64) (restore func()) {
	oldMin, oldFull := memMinFree, memFullBelow
	memMinFree, memFullBelow = minFree, fullBelow
	return func() { memMinFree, memFullBelow = oldMin, oldFull }
}

// SetSettled sets, for a test, how long before a build a context file must
// have last changed for its sum to be kept.
func SetSettled(d time.Duration) (restore func()) {
	old := settled
	settled = d
	return func() { settled = old }
}
