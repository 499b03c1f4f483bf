module webhookcerts.test/goserver

go 1.22
