module providervectors

go 1.22
