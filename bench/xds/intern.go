package main

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// interner decodes each distinct resource encoding once and hands the same
// message to every proxy that receives those bytes. A thousand simulated
// proxies each holding their own decoded copy of a thousand clusters and
// endpoint assignments would take gigabytes and most of the machine's CPU,
// and the benchmark would measure itself instead of the control plane.
// The control plane marshals deterministically, so equal resources arrive
// as equal bytes. Messages are shared: simproxy only reads them.
type interner struct {
	mu     sync.RWMutex
	byType map[string]map[string]proto.Message // type URL -> encoding -> message
}

func newInterner() *interner {
	return &interner{byType: map[string]map[string]proto.Message{}}
}

func (in *interner) decode(a *anypb.Any) (proto.Message, error) {
	in.mu.RLock()
	m, ok := in.byType[a.GetTypeUrl()][string(a.GetValue())] // no allocation for the lookup key
	in.mu.RUnlock()
	if ok {
		return m, nil
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if prev, ok := in.byType[a.GetTypeUrl()][string(a.GetValue())]; ok {
		return prev, nil // another proxy decoded it meanwhile
	}
	t := in.byType[a.GetTypeUrl()]
	if t == nil {
		t = map[string]proto.Message{}
		in.byType[a.GetTypeUrl()] = t
	}
	t[string(a.GetValue())] = m
	return m, nil
}
