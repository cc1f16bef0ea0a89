#!/bin/sh
echo steps
