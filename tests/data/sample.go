// Package lru is a small least-recently-used cache: real Go for the code splitter test.
package lru

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
)

// ErrCapacity is returned when a cache is created without room for any entry.
var ErrCapacity = errors.New("lru: capacity must be positive")

type entry struct {
	key   string
	value []byte
}

// Cache keeps at most Capacity entries and evicts the least recently used one.
type Cache struct {
	mu       sync.Mutex
	capacity int
	order    *list.List
	items    map[string]*list.Element
	hits     int
	misses   int
	onEvict  func(key string, value []byte)
}

// New returns an empty cache that holds up to capacity entries.
func New(capacity int, onEvict func(string, []byte)) (*Cache, error) {
	if capacity <= 0 {
		return nil, ErrCapacity
	}
	return &Cache{
		capacity: capacity,
		order:    list.New(),
		items:    make(map[string]*list.Element, capacity),
		onEvict:  onEvict,
	}, nil
}

// Get returns the value for key and marks it as recently used.
func (c *Cache) Get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		c.misses++
		return nil, false
	}
	c.hits++
	c.order.MoveToFront(el)
	return el.Value.(*entry).value, true
}

// Put stores value under key, evicting the oldest entry when the cache is full.
func (c *Cache) Put(key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*entry).value = value
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&entry{key: key, value: value})
	if c.order.Len() > c.capacity {
		c.evictOldest()
	}
}

// Remove deletes key and reports whether it was present.
func (c *Cache) Remove(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return false
	}
	c.order.Remove(el)
	delete(c.items, key)
	return true
}

func (c *Cache) evictOldest() {
	el := c.order.Back()
	if el == nil {
		return
	}
	c.order.Remove(el)
	e := el.Value.(*entry)
	delete(c.items, e.key)
	if c.onEvict != nil {
		c.onEvict(e.key, e.value)
	}
}

// Keys returns the keys from the most to the least recently used.
func (c *Cache) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, c.order.Len())
	for el := c.order.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*entry).key)
	}
	return keys
}

// Resize changes the capacity, evicting the oldest entries that no longer fit.
func (c *Cache) Resize(capacity int) (evicted int, err error) {
	if capacity <= 0 {
		return 0, ErrCapacity
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capacity = capacity
	for c.order.Len() > c.capacity {
		c.evictOldest()
		evicted++
	}
	return evicted, nil
}

// Stats describes how well the cache is doing.
type Stats struct {
	Len     int
	Hits    int
	Misses  int
	HitRate float64
}

// Stats returns the current counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Len: c.order.Len(), Hits: c.hits, Misses: c.misses}
	if total := c.hits + c.misses; total > 0 {
		s.HitRate = float64(c.hits) / float64(total)
	}
	return s
}

func (s Stats) String() string {
	return fmt.Sprintf("%d entries, %d hits, %d misses (%.0f%% hit rate)", s.Len, s.Hits, s.Misses, 100*s.HitRate)
}
