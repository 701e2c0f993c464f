require "fileinto";
fileinto "Same";
fileinto "Same";
keep;
fileinto "INBOX";
redirect "x@example.org";
redirect "x@example.org";
