"""The HTTP side facing the namespace proxies: the request parser, answers, the server
protocol and its listening sockets."""
