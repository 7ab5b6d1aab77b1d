module infercycle.local/pause

go 1.22
