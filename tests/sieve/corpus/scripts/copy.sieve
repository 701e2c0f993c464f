require ["copy", "fileinto"];
fileinto :copy "Archive";
redirect :copy "archive@example.org";
if header :contains "subject" "money" { redirect "spam@example.org"; }
