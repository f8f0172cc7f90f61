module courier.example/goecho

go 1.22
