require "vacation";
if header :contains "subject" "cyrus" {
    vacation "I'm out -- send mail to cyrus-bugs";
} else {
    vacation :days 23 :subject "Away" :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]
    "I'm away until October 19.
If it's an emergency, call 911, I guess." ;
}
